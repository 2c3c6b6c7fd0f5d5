//! Users, sessions, API keys and join tokens. Secrets arrive here already hashed.

use hearth_types::auth::{ApiKey, Role, User};
use sqlx::any::AnyRow;

use crate::{col, now_ms, paged, parse, to_time, unique, Paged, Result, Store, StoreError};

fn user(row: &AnyRow) -> Result<User> {
    Ok(User {
        id: col(row, "id")?,
        username: col(row, "username")?,
        role: parse("role", &col::<String>(row, "role")?)?,
        created_at: to_time(col(row, "created_at")?),
    })
}

fn api_key(row: &AnyRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: col(row, "id")?,
        name: col(row, "name")?,
        prefix: col(row, "prefix")?,
        user_id: col(row, "user_id")?,
        role: parse("role", &col::<String>(row, "role")?)?,
        created_at: to_time(col(row, "created_at")?),
        expires_at: col::<Option<i64>>(row, "expires_at")?.map(to_time),
        last_used_at: col::<Option<i64>>(row, "last_used_at")?.map(to_time),
    })
}

/// Who a valid session token or API key belongs to.
#[derive(Debug, Clone)]
pub struct SessionPrincipal {
    pub user: User,
    /// The role granted: the user's for a session, the key's (never above the user's) for a key.
    pub role: Role,
    /// `Some(name)` when authenticated with an API key.
    pub api_key: Option<String>,
}

/// An API key as stored, for authentication.
pub struct ApiKeyRow {
    pub key: ApiKey,
    pub revoked: bool,
}

const USER_COLS: &str = "id, username, role, created_at";
const KEY_COLS: &str = "id, name, prefix, user_id, role, created_at, expires_at, last_used_at";

impl Store {
    pub async fn create_user(
        &self,
        id: &str,
        username: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<User> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(id)
        .bind(username)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| unique(e, || format!("a user named {username:?} already exists")))?;
        self.user(id).await
    }

    pub async fn count_users(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?;
        col(&row, "n")
    }

    /// A user by id or username.
    pub async fn user(&self, id_or_name: &str) -> Result<User> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLS} FROM users WHERE id = $1 OR username = $1"
        ))
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("user {id_or_name:?}")))?;
        user(&row)
    }

    /// The user's id and password hash, for login.
    pub async fn user_credentials(&self, username: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLS}, password_hash FROM users WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((user(&r)?, col(&r, "password_hash")?)))
            .transpose()
    }

    pub async fn list_users(&self, cursor: Option<&str>, limit: u32) -> Result<Paged<User>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(cursor.unwrap_or(""))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let users = rows.iter().map(user).collect::<Result<Vec<_>>>()?;
        Ok(paged(users, limit, |u| &u.id))
    }

    pub async fn update_user(
        &self,
        id: &str,
        password_hash: Option<&str>,
        role: Option<Role>,
    ) -> Result<User> {
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query(
            "UPDATE users SET password_hash = COALESCE($2, password_hash), \
             role = COALESCE($3, role), updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(password_hash)
        .bind(role.map(Role::as_str))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user {id:?}")));
        }
        if password_hash.is_some() {
            // A new password ends every session opened with the old one.
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.user(id).await
    }

    /// Deletes a user with their sessions and API keys.
    pub async fn delete_user(&self, id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM api_keys WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let res = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user {id:?}")));
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn create_session(
        &self,
        id: &str,
        token_hash: &str,
        user_id: &str,
        expires_at_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (id, token_hash, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(token_hash)
        .bind(user_id)
        .bind(now_ms())
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The principal of an unexpired session, if any.
    pub async fn session_principal(&self, token_hash: &str) -> Result<Option<SessionPrincipal>> {
        let row = sqlx::query(
            "SELECT u.id, u.username, u.role, u.created_at FROM sessions s \
             JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(token_hash)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let user = user(&r)?;
            Ok(SessionPrincipal {
                role: user.role,
                user,
                api_key: None,
            })
        })
        .transpose()
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drops expired sessions; returns how many.
    pub async fn purge_expired_sessions(&self) -> Result<u64> {
        let res = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected())
    }

    pub async fn create_api_key(&self, key: &ApiKey, secret_hash: &str) -> Result<ApiKey> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, prefix, secret_hash, user_id, role, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(secret_hash)
        .bind(&key.user_id)
        .bind(key.role.as_str())
        .bind(key.created_at.timestamp_millis())
        .bind(key.expires_at.map(|t| t.timestamp_millis()))
        .execute(&self.pool)
        .await?;
        self.api_key(&key.id).await
    }

    pub async fn api_key(&self, id: &str) -> Result<ApiKey> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE id = $1 AND revoked_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("API key {id:?}")))?;
        api_key(&row)
    }

    /// Unrevoked keys, all of them or one user's.
    pub async fn list_api_keys(
        &self,
        user_id: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Paged<ApiKey>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE revoked_at IS NULL AND id > $1 \
             AND ($2 = '' OR user_id = $2) ORDER BY id LIMIT $3"
        ))
        .bind(cursor.unwrap_or(""))
        .bind(user_id.unwrap_or(""))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let keys = rows.iter().map(api_key).collect::<Result<Vec<_>>>()?;
        Ok(paged(keys, limit, |k| &k.id))
    }

    pub async fn revoke_api_key(&self, id: &str) -> Result<()> {
        let res =
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now_ms())
                .execute(&self.pool)
                .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("API key {id:?}")));
        }
        Ok(())
    }

    /// The principal of a live (unrevoked, unexpired) API key, if any; records its use.
    pub async fn api_key_principal(&self, secret_hash: &str) -> Result<Option<SessionPrincipal>> {
        let now = now_ms();
        let row = sqlx::query(
            "SELECT k.id AS key_id, k.name AS key_name, k.role AS key_role, \
             u.id, u.username, u.role, u.created_at FROM api_keys k \
             JOIN users u ON u.id = k.user_id WHERE k.secret_hash = $1 \
             AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2)",
        )
        .bind(secret_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user = user(&row)?;
        let key_role: Role = parse("role", &col::<String>(&row, "key_role")?)?;
        let key_id: String = col(&row, "key_id")?;
        sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
            .bind(&key_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(Some(SessionPrincipal {
            // A key never grants more than its owner has now.
            role: key_role.min(user.role),
            user,
            api_key: Some(col(&row, "key_name")?),
        }))
    }

    pub async fn create_join_token(
        &self,
        id: &str,
        token_hash: &str,
        created_by: &str,
        expires_at_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO join_tokens (id, token_hash, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(token_hash)
        .bind(created_by)
        .bind(now_ms())
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn join_token_valid(&self, token_hash: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM join_tokens WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(col::<i64>(&row, "n")? > 0)
    }
}
