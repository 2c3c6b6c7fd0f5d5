//! Secrets as stored: encrypted values. The manager holds the key and does the crypto.

use sqlx::any::AnyRow;

use crate::{col, now_ms, Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct SecretRecord {
    pub name: String,
    /// Base64.
    pub nonce: String,
    /// Base64.
    pub ciphertext: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

fn secret(row: &AnyRow) -> Result<SecretRecord> {
    Ok(SecretRecord {
        name: col(row, "name")?,
        nonce: col(row, "nonce")?,
        ciphertext: col(row, "ciphertext")?,
        created_at_ms: col(row, "created_at")?,
        updated_at_ms: col(row, "updated_at")?,
    })
}

impl Store {
    /// Creates or replaces a secret.
    pub async fn put_secret(
        &self,
        name: &str,
        nonce: &str,
        ciphertext: &str,
    ) -> Result<SecretRecord> {
        let now = now_ms();
        let updated = sqlx::query(
            "UPDATE secrets SET nonce = $2, ciphertext = $3, updated_at = $4 WHERE name = $1",
        )
        .bind(name)
        .bind(nonce)
        .bind(ciphertext)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO secrets (name, nonce, ciphertext, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(name)
            .bind(nonce)
            .bind(ciphertext)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|e| {
                crate::unique(e, || {
                    format!("secret {name:?} was set at the same time; retry")
                })
            })?;
        }
        self.secret(name).await
    }

    pub async fn secret(&self, name: &str) -> Result<SecretRecord> {
        let row = sqlx::query(
            "SELECT name, nonce, ciphertext, created_at, updated_at FROM secrets WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("secret {name:?}")))?;
        secret(&row)
    }

    pub async fn secrets(&self) -> Result<Vec<SecretRecord>> {
        let rows = sqlx::query(
            "SELECT name, nonce, ciphertext, created_at, updated_at FROM secrets ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(secret).collect()
    }

    pub async fn delete_secret(&self, name: &str) -> Result<()> {
        let res = sqlx::query("DELETE FROM secrets WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("secret {name:?}")));
        }
        Ok(())
    }
}

/// The cluster CA as stored: its certificate, and its key sealed by the manager.
#[derive(Debug, Clone)]
pub struct CaRecord {
    pub cert_pem: String,
    /// Base64.
    pub key_nonce: String,
    /// Base64.
    pub key_ciphertext: String,
}

impl Store {
    /// The cluster CA, if one was made.
    pub async fn cluster_ca(&self) -> Result<Option<CaRecord>> {
        let row =
            sqlx::query("SELECT cert_pem, key_nonce, key_ciphertext FROM cluster_ca WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(CaRecord {
                cert_pem: col(&r, "cert_pem")?,
                key_nonce: col(&r, "key_nonce")?,
                key_ciphertext: col(&r, "key_ciphertext")?,
            })
        })
        .transpose()
    }

    /// Stores `ca` unless a CA is there already (another manager made one first); returns
    /// the one that is stored either way.
    pub async fn insert_cluster_ca(&self, ca: &CaRecord) -> Result<CaRecord> {
        sqlx::query(
            "INSERT INTO cluster_ca (id, cert_pem, key_nonce, key_ciphertext, created_at) \
             VALUES (1, $1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ca.cert_pem)
        .bind(&ca.key_nonce)
        .bind(&ca.key_ciphertext)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.cluster_ca()
            .await?
            .ok_or_else(|| StoreError::NotFound("the cluster CA just stored".into()))
    }
}
