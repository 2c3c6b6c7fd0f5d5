//! Secrets: values encrypted with AES-256-GCM before they reach the database, decrypted only
//! to hand a function its environment. The key comes from the configuration
//! (`secrets_key`), or is generated once in `<data_dir>/secrets.key` (mode 0600).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hearth_store::{to_time, SecretRecord};
use hearth_types::function::{PutSecret, Secret};
use secrecy::ExposeSecret;

use super::App;
use crate::error::{ApiError, ApiResult};

const MAX_SECRET_BYTES: usize = 64 << 10;

fn view(s: SecretRecord) -> Secret {
    Secret {
        name: s.name,
        created_at: to_time(s.created_at_ms),
        updated_at: to_time(s.updated_at_ms),
    }
}

/// Checks a secret's name: 1–63 lowercase letters, digits, dashes and underscores.
pub fn check_secret_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid secret name {name:?}: 1–63 lowercase letters, digits, dashes and underscores"
        )))
    }
}

impl App {
    fn cipher(&self) -> ApiResult<&Aes256Gcm> {
        let result = self.inner.secrets_cipher.get_or_init(|| {
            let key = match &self.config().secrets_key {
                Some(k) => B64
                    .decode(k.expose_secret().trim())
                    .map_err(|e| format!("secrets_key is not base64: {e}"))?,
                None => load_or_create_key(&self.config().data_dir.join("secrets.key"))?,
            };
            if key.len() != 32 {
                return Err(format!(
                    "the secrets key must be 32 bytes, not {}",
                    key.len()
                ));
            }
            Ok(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)))
        });
        result
            .as_ref()
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("secrets are unavailable: {e}")))
    }

    /// Encrypts `plain` with the secrets key: (nonce, ciphertext), both base64.
    pub(crate) fn seal(&self, plain: &[u8]) -> ApiResult<(String, String)> {
        let mut nonce = [0u8; 12];
        rand::fill(&mut nonce);
        let ciphertext = self
            .cipher()?
            .encrypt(Nonce::from_slice(&nonce), plain)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("encrypting: {e}")))?;
        Ok((B64.encode(nonce), B64.encode(ciphertext)))
    }

    /// Decrypts what [`App::seal`] made.
    pub(crate) fn unseal(&self, nonce: &str, ciphertext: &str) -> Result<Vec<u8>, String> {
        let nonce = B64.decode(nonce).map_err(|e| e.to_string())?;
        let ct = B64.decode(ciphertext).map_err(|e| e.to_string())?;
        if nonce.len() != 12 {
            return Err("the nonce is not 12 bytes".into());
        }
        self.cipher()
            .map_err(|e| e.to_string())?
            .decrypt(Nonce::from_slice(&nonce), ct.as_ref())
            .map_err(|_| "cannot be decrypted: was the secrets key changed?".into())
    }

    pub async fn put_secret(&self, name: &str, req: PutSecret) -> ApiResult<Secret> {
        check_secret_name(name)?;
        if req.value.len() > MAX_SECRET_BYTES {
            return Err(ApiError::PayloadTooLarge(
                "a secret is at most 64 KiB".into(),
            ));
        }
        let (nonce, ciphertext) = self.seal(req.value.as_bytes())?;
        let s = self.store().put_secret(name, &nonce, &ciphertext).await?;
        Ok(view(s))
    }

    pub async fn list_secrets(&self) -> ApiResult<Vec<Secret>> {
        Ok(self
            .store()
            .secrets()
            .await?
            .into_iter()
            .map(view)
            .collect())
    }

    pub async fn delete_secret(&self, name: &str) -> ApiResult<()> {
        self.store().delete_secret(name).await?;
        Ok(())
    }

    /// The values of the secrets a function's env refers to.
    pub(crate) async fn secret_env(
        &self,
        refs: &BTreeMap<String, String>,
    ) -> ApiResult<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for (var, name) in refs {
            let s = self.store().secret(name).await.map_err(|_| {
                ApiError::Conflict(format!(
                    "the function's env {var} refers to secret {name:?}, which does not exist; \
                     set it with `hearth secret set {name}`"
                ))
            })?;
            let plain = self
                .unseal(&s.nonce, &s.ciphertext)
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("secret {name:?}: {e}")))?;
            out.insert(
                var.clone(),
                String::from_utf8(plain)
                    .map_err(|e| ApiError::Internal(anyhow::anyhow!("secret {name:?}: {e}")))?,
            );
        }
        Ok(out)
    }
}

fn load_or_create_key(path: &std::path::Path) -> Result<Vec<u8>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => B64
            .decode(text.trim())
            .map_err(|e| format!("{} is not base64: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = vec![0u8; 32];
            rand::fill(&mut key[..]);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("creating {}: {e}", path.display()))?;
            f.write_all(format!("{}\n", B64.encode(&key)).as_bytes())
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}
