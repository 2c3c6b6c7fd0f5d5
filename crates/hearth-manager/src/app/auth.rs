//! Authentication and the accounts behind it: logins and sessions, API keys, users, and the
//! first admin.
//!
//! Passwords are hashed with Argon2id; session tokens and API key secrets are random and only
//! their SHA-256 is stored (they are long and random, so a fast hash is enough and lets a
//! lookup be a single indexed query).

use std::os::unix::fs::OpenOptionsExt;

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{Duration as ChronoDuration, Utc};
use hearth_store::StoreError;
use hearth_types::api::Page;
use hearth_types::auth::{
    ApiKey, CreateApiKey, CreateUser, CreatedApiKey, LoginRequest, LoginResponse, Role, UpdateUser,
    User, WhoAmI,
};
use hearth_types::new_id;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::{page, page_limit, require, App};
use crate::error::{ApiError, ApiResult};

/// Session tokens and API keys are told apart by prefix.
const SESSION_PREFIX: &str = "hs_";
const API_KEY_PREFIX: &str = "hk_";
const MIN_PASSWORD_LEN: usize = 8;
const MAX_PASSWORD_LEN: usize = 1024;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub username: String,
    pub role: Role,
    /// The key's name when authenticated with an API key.
    pub api_key: Option<String>,
}

impl Principal {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        match &self.api_key {
            Some(k) => format!("{}/apikey:{k}", self.username),
            None => self.username.clone(),
        }
    }
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

pub fn random_secret(prefix: &str) -> String {
    let mut buf = [0u8; 32];
    rand::fill(&mut buf);
    format!("{prefix}{}", hex::encode(buf))
}

async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
    })
    .await
    .context("password hashing task")?
    .map_err(ApiError::Internal)
}

async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A hash verified against when the username is unknown, so a login for a missing user
/// takes as long as one for a real user.
async fn dummy_hash() -> String {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DUMMY
        .get_or_init(|| async { hash_password(random_secret("")).await.unwrap_or_default() })
        .await
        .clone()
}

fn validate_username(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "username must be 1–64 characters of letters, digits, '-', '_', '.' or '@'",
        ))
    }
}

fn validate_password(password: &str) -> ApiResult<()> {
    if password.len() < MIN_PASSWORD_LEN {
        return Err(ApiError::bad_request(format!(
            "password must be at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(ApiError::bad_request(format!(
            "password must be at most {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

impl App {
    /// Creates user `admin` on first start. Its password comes from the configuration
    /// (`HEARTH_ADMIN_PASSWORD`) or is generated and written to `<data dir>/admin-password`
    /// (mode 0600). Returns where the password is, for the start-up banner.
    pub async fn bootstrap_admin(&self) -> anyhow::Result<Option<String>> {
        if self.store().count_users().await? > 0 {
            return Ok(None);
        }
        let (password, told) = match &self.config().admin_password {
            Some(p) => (
                p.expose_secret().to_string(),
                "HEARTH_ADMIN_PASSWORD".to_string(),
            ),
            None => {
                let password = random_secret("")[..24].to_string();
                let path = self.config().data_dir.join("admin-password");
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
                std::io::Write::write_all(&mut f, format!("{password}\n").as_bytes())?;
                (password, path.display().to_string())
            }
        };
        let hash = hash_password(password)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        match self
            .store()
            .create_user(&new_id(), "admin", &hash, Role::Admin)
            .await
        {
            Ok(_) => {}
            // Another manager on the same database won the race.
            Err(StoreError::Conflict(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(password_in = %told, "created user admin");
        Ok(Some(told))
    }

    pub async fn login(&self, req: LoginRequest) -> ApiResult<LoginResponse> {
        if let Err(wait) = self.inner.login_throttle.check(&req.username) {
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "too many failed logins for {:?}; try again in {} s",
                    req.username,
                    wait.as_secs().max(1)
                ),
                retry_after_s: wait.as_secs().max(1),
            });
        }
        if req.password.len() > MAX_PASSWORD_LEN {
            return Err(ApiError::bad_request("password is too long"));
        }
        let creds = self.store().user_credentials(&req.username).await?;
        let (user, hash) = match creds {
            Some((u, h)) => (Some(u), h),
            None => (None, dummy_hash().await),
        };
        let ok = verify_password(req.password, hash).await;
        let user = match (ok, user) {
            (true, Some(u)) => u,
            _ => {
                self.inner.login_throttle.failed(&req.username);
                return Err(ApiError::Unauthenticated(
                    "wrong username or password".into(),
                ));
            }
        };
        self.inner.login_throttle.succeeded(&req.username);
        let token = random_secret(SESSION_PREFIX);
        let expires_at = Utc::now() + ChronoDuration::seconds(self.config().session_ttl_s as i64);
        self.store()
            .create_session(
                &new_id(),
                &sha256_hex(&token),
                &user.id,
                expires_at.timestamp_millis(),
            )
            .await?;
        Ok(LoginResponse { token, expires_at })
    }

    pub async fn logout(&self, token: &str) -> ApiResult<()> {
        self.store().delete_session(&sha256_hex(token)).await?;
        Ok(())
    }

    /// The principal a bearer credential stands for.
    pub async fn authenticate(&self, token: &str) -> ApiResult<Principal> {
        let hash = sha256_hex(token);
        let found = if token.starts_with(API_KEY_PREFIX) {
            self.store().api_key_principal(&hash).await?
        } else if token.starts_with(SESSION_PREFIX) {
            self.store().session_principal(&hash).await?
        } else {
            None
        };
        let p = found.ok_or_else(|| {
            ApiError::Unauthenticated(
                "the token is invalid or expired; log in again (`hearth login`)".into(),
            )
        })?;
        Ok(Principal {
            user_id: p.user.id,
            username: p.user.username,
            role: p.role,
            api_key: p.api_key,
        })
    }

    pub fn whoami(&self, p: &Principal) -> WhoAmI {
        WhoAmI {
            user_id: p.user_id.clone(),
            username: p.username.clone(),
            role: p.role,
            via: if p.api_key.is_some() {
                "api_key"
            } else {
                "session"
            }
            .into(),
        }
    }

    pub async fn create_user(&self, req: CreateUser) -> ApiResult<User> {
        validate_username(&req.username)?;
        validate_password(&req.password)?;
        let hash = hash_password(req.password).await?;
        Ok(self
            .store()
            .create_user(&new_id(), &req.username, &hash, req.role)
            .await?)
    }

    pub async fn list_users(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> ApiResult<Page<User>> {
        let p = self.store().list_users(cursor, page_limit(limit)?).await?;
        Ok(page(p, |u| u))
    }

    pub async fn user(&self, id_or_name: &str) -> ApiResult<User> {
        Ok(self.store().user(id_or_name).await?)
    }

    pub async fn update_user(
        &self,
        by: &Principal,
        id_or_name: &str,
        req: UpdateUser,
    ) -> ApiResult<User> {
        let user = self.store().user(id_or_name).await?;
        if req.password.is_none() && req.role.is_none() {
            return Err(ApiError::bad_request(
                "nothing to change: give password and/or role",
            ));
        }
        if user.id == by.user_id && req.role.is_some_and(|r| r < Role::Admin) {
            return Err(ApiError::Conflict("you cannot lower your own role".into()));
        }
        let hash = match req.password {
            Some(p) => {
                validate_password(&p)?;
                Some(hash_password(p).await?)
            }
            None => None,
        };
        Ok(self
            .store()
            .update_user(&user.id, hash.as_deref(), req.role)
            .await?)
    }

    pub async fn delete_user(&self, by: &Principal, id_or_name: &str) -> ApiResult<()> {
        let user = self.store().user(id_or_name).await?;
        if user.id == by.user_id {
            return Err(ApiError::Conflict("you cannot delete yourself".into()));
        }
        Ok(self.store().delete_user(&user.id).await?)
    }

    pub async fn create_api_key(
        &self,
        by: &Principal,
        req: CreateApiKey,
    ) -> ApiResult<CreatedApiKey> {
        let name = req.name.trim();
        if name.is_empty() || name.len() > 64 {
            return Err(ApiError::bad_request("name must be 1–64 characters"));
        }
        let role = req.role.unwrap_or(by.role);
        if role > by.role {
            return Err(ApiError::Forbidden(format!(
                "a key cannot have more than your own role ({})",
                by.role
            )));
        }
        let expires_at = match req.expires_in_days {
            Some(0) | Some(3651..) => {
                return Err(ApiError::bad_request("expires_in_days must be 1–3650"))
            }
            Some(d) => Some(Utc::now() + ChronoDuration::days(i64::from(d))),
            None => None,
        };
        let secret = random_secret(API_KEY_PREFIX);
        let key = ApiKey {
            id: new_id(),
            name: name.to_string(),
            prefix: secret[..10].to_string(),
            user_id: by.user_id.clone(),
            role,
            created_at: Utc::now(),
            expires_at,
            last_used_at: None,
        };
        let key = self
            .store()
            .create_api_key(&key, &sha256_hex(&secret))
            .await?;
        Ok(CreatedApiKey { key, secret })
    }

    /// An admin sees every key; anyone else their own.
    pub async fn list_api_keys(
        &self,
        by: &Principal,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> ApiResult<Page<ApiKey>> {
        let owner = (by.role < Role::Admin).then_some(by.user_id.as_str());
        let p = self
            .store()
            .list_api_keys(owner, cursor, page_limit(limit)?)
            .await?;
        Ok(page(p, |k| k))
    }

    pub async fn revoke_api_key(&self, by: &Principal, id: &str) -> ApiResult<()> {
        let key = self.store().api_key(id).await?;
        if key.user_id != by.user_id {
            require(by, Role::Admin)
                .map_err(|_| ApiError::NotFound(format!("API key {id:?} not found")))?;
        }
        Ok(self.store().revoke_api_key(&key.id).await?)
    }
}
