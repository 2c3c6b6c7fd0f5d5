//! Hearth's database: one [`Store`] over SQLite (the embedded default) or PostgreSQL (for
//! clusters), chosen by the URL. Queries are written once with `$N` placeholders, which both
//! backends accept through sqlx's `Any` driver; the schema lives in versioned migrations, one
//! directory per dialect, applied at start.
//!
//! Storage errors are mapped here, at the boundary: a missing row is [`StoreError::NotFound`],
//! a unique violation [`StoreError::Conflict`]; callers never see sqlx.
//!
//! Times are stored as Unix milliseconds (`BIGINT`), ids as time-ordered UUID strings, so
//! paging by `id > cursor` works the same on both backends.

mod auth;
mod events;
mod functions;
mod hosts;
mod networks;
mod secrets;
mod snapshots;
mod templates;
mod vms;
mod volumes;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor};

pub use auth::{ApiKeyRow, SessionPrincipal};
pub use functions::{
    AliasRecord, FunctionRecord, InvocationRecord, QueuedInvocation, ScheduleRecord, VersionRecord,
    KEEP_INVOCATIONS,
};
pub use hosts::{HostRecord, NewHost};
pub use networks::NetworkRecord;
pub use secrets::{CaRecord, SecretRecord};
pub use snapshots::SnapshotRecord;
pub use templates::TemplateRecord;
pub use vms::{Observed, VmRecord};
pub use volumes::VolumeRecord;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Store {
    /// Opens the database named by `url` (`sqlite://PATH` or `postgres://…`), creating a
    /// SQLite file when missing, and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Conflict(format!(
                "unsupported database URL {:?}: use sqlite://PATH or postgres://…",
                redact_url(url)
            )));
        };
        let mut url = url.to_string();
        if backend == Backend::Sqlite && !url.contains("mode=") {
            url.push_str(if url.contains('?') {
                "&mode=rwc"
            } else {
                "?mode=rwc"
            });
        }
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            // WAL lets readers run beside the one writer; busy_timeout queues writers instead
            // of failing them; SQLite leaves foreign keys off unless asked.
            options = options.max_connections(8).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; \
                         PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;",
                    )
                    .await?;
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(16);
        }
        let pool = options.connect(&url).await?;
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Records that the manager `id` is alive now.
    pub async fn manager_seen(&self, id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO managers (id, last_seen_at) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The managers seen since `since_ms`. Ones silent for an hour are forgotten.
    pub async fn live_managers(&self, since_ms: i64) -> Result<std::collections::HashSet<String>> {
        sqlx::query("DELETE FROM managers WHERE last_seen_at < $1")
            .bind(now_ms() - 3_600_000)
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query("SELECT id FROM managers WHERE last_seen_at >= $1")
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| col(r, "id")).collect()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A URL with its password replaced, fit for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// One page of rows, and the cursor for the next page when there is one.
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Cuts `rows` (fetched with `LIMIT limit + 1`) to `limit` and derives the next cursor.
fn paged<T>(mut rows: Vec<T>, limit: u32, id: impl Fn(&T) -> &str) -> Paged<T> {
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| id(r).to_string())
    } else {
        None
    };
    Paged {
        items: rows,
        next_cursor,
    }
}

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub fn to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn parse<T: FromStr>(what: &str, s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("{what} {s:?}")))
}

fn col<T>(row: &AnyRow, name: &str) -> Result<T>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    use sqlx::Row;
    Ok(row.try_get(name)?)
}

/// Maps a unique violation to [`StoreError::Conflict`] with `what` as its message.
fn unique(err: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what()),
        _ => StoreError::Database(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://hearth:s3cret@db:5432/hearth"),
            "postgres://hearth:***@db:5432/hearth"
        );
        assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
