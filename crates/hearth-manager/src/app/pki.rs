//! The cluster CA as the manager holds it: made once per database (its key sealed with the
//! secrets key, so managers sharing a database must share `secrets_key`), loaded at start,
//! and used to sign the agents' certificates at registration and this manager's own when
//! it serves TLS. The crypto itself is in [`hearth_agent_api::tls`].

use std::sync::Arc;

use anyhow::Context;
use hearth_agent_api::tls::{self, ClusterCa};
use hearth_store::CaRecord;

use super::App;

impl App {
    /// Loads the cluster CA, making it first when this database has none. Called once, by
    /// [`crate::Application::build`].
    pub async fn load_cluster_ca(&self) -> anyhow::Result<()> {
        let stored = match self.store().cluster_ca().await? {
            Some(r) => r,
            None => {
                let (cert_pem, key_pem) = tls::new_ca()?;
                let (key_nonce, key_ciphertext) = self
                    .seal(key_pem.as_bytes())
                    .map_err(|e| anyhow::anyhow!("sealing the cluster CA's key: {e}"))?;
                // Another manager may have stored one meanwhile: the stored one wins.
                self.store()
                    .insert_cluster_ca(&CaRecord {
                        cert_pem,
                        key_nonce,
                        key_ciphertext,
                    })
                    .await?
            }
        };
        let key = self
            .unseal(&stored.key_nonce, &stored.key_ciphertext)
            .map_err(|e| {
                anyhow::anyhow!(
                    "the cluster CA's key {e}; managers sharing a database must share \
                     secrets_key (HEARTH_SECRETS_KEY)"
                )
            })?;
        let key = String::from_utf8(key).context("the cluster CA's key is not PEM")?;
        let ca = ClusterCa::from_pem(&stored.cert_pem, &key)?;
        // Set once; a second call (there is none) would keep the first.
        let _ = self.inner.cluster_ca.set(Arc::new(ca));
        Ok(())
    }

    /// The cluster CA. Panics before [`App::load_cluster_ca`], which every way of building
    /// a manager calls first.
    pub fn cluster_ca(&self) -> &ClusterCa {
        self.inner
            .cluster_ca
            .get()
            .expect("the cluster CA is loaded when the manager is built")
    }

    /// The SHA-256 of the cluster CA's certificate, when this manager serves TLS: join
    /// tokens carry it so that an agent can check the manager before trusting it.
    pub(crate) fn tls_fingerprint(&self) -> Option<String> {
        self.config()
            .serves_tls()
            .then(|| tls::fingerprint(self.cluster_ca().cert_pem()).ok())
            .flatten()
    }
}
