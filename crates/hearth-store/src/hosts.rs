//! Hosts: registration, heartbeats and cordoning. What an agent reports (capacity,
//! accelerators, VMMs) is kept as one JSON document, since only the agent writes it.

use sqlx::any::AnyRow;

use crate::{col, now_ms, Result, Store, StoreError};

/// A host row as stored. `info` is the agent's last report, as JSON.
#[derive(Debug, Clone)]
pub struct HostRecord {
    pub id: String,
    pub name: String,
    pub address: String,
    pub secret_hash: String,
    pub agent_token: String,
    pub cordoned: bool,
    pub info: serde_json::Value,
    pub registered_at_ms: i64,
    pub last_heartbeat_at_ms: Option<i64>,
}

pub struct NewHost<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub address: &'a str,
    pub secret_hash: &'a str,
    pub agent_token: &'a str,
    pub info: &'a serde_json::Value,
}

fn host(row: &AnyRow) -> Result<HostRecord> {
    let info: String = col(row, "info")?;
    Ok(HostRecord {
        id: col(row, "id")?,
        name: col(row, "name")?,
        address: col(row, "address")?,
        secret_hash: col(row, "secret_hash")?,
        agent_token: col(row, "agent_token")?,
        cordoned: col::<i64>(row, "cordoned")? != 0,
        info: serde_json::from_str(&info)
            .map_err(|e| StoreError::Corrupt(format!("host info: {e}")))?,
        registered_at_ms: col(row, "registered_at")?,
        last_heartbeat_at_ms: col(row, "last_heartbeat_at")?,
    })
}

const HOST_COLS: &str = "id, name, address, secret_hash, agent_token, cordoned, info, \
                         registered_at, last_heartbeat_at";

impl Store {
    /// Records a newly joined host, or refreshes a known one (same id) that registered again
    /// after a restart. Joining counts as a first heartbeat; registering again does not: a
    /// host that was silent stays `down` until a heartbeat has said which VMs it runs.
    pub async fn upsert_host(&self, h: NewHost<'_>) -> Result<HostRecord> {
        let now = now_ms();
        let info = h.info.to_string();
        let updated = sqlx::query(
            "UPDATE hosts SET name = $2, address = $3, secret_hash = $4, agent_token = $5, \
             info = $6 WHERE id = $1",
        )
        .bind(h.id)
        .bind(h.name)
        .bind(h.address)
        .bind(h.secret_hash)
        .bind(h.agent_token)
        .bind(&info)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO hosts (id, name, address, secret_hash, agent_token, cordoned, info, \
                 registered_at, last_heartbeat_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $7)",
            )
            .bind(h.id)
            .bind(h.name)
            .bind(h.address)
            .bind(h.secret_hash)
            .bind(h.agent_token)
            .bind(&info)
            .bind(now)
            .execute(&self.pool)
            .await?;
        }
        self.host(h.id).await
    }

    /// Replaces what a host reported, without counting as a heartbeat (the manager asked
    /// the agent itself, e.g. right after giving it an image).
    pub async fn set_host_info(&self, id: &str, info: &serde_json::Value) -> Result<()> {
        sqlx::query("UPDATE hosts SET info = $2 WHERE id = $1")
            .bind(id)
            .bind(info.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn heartbeat_host(&self, id: &str, info: &serde_json::Value) -> Result<()> {
        let res = sqlx::query("UPDATE hosts SET info = $2, last_heartbeat_at = $3 WHERE id = $1")
            .bind(id)
            .bind(info.to_string())
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("host {id:?}")));
        }
        Ok(())
    }

    /// A host by id, or by name when exactly one host has it.
    pub async fn host(&self, id_or_name: &str) -> Result<HostRecord> {
        let rows = sqlx::query(&format!(
            "SELECT {HOST_COLS} FROM hosts WHERE id = $1 OR name = $1 ORDER BY id LIMIT 3"
        ))
        .bind(id_or_name)
        .fetch_all(&self.pool)
        .await?;
        if let Some(exact) = rows
            .iter()
            .find(|r| col::<String>(r, "id").ok().as_deref() == Some(id_or_name))
        {
            return host(exact);
        }
        match rows.as_slice() {
            [one] => host(one),
            [] => Err(StoreError::NotFound(format!("host {id_or_name:?}"))),
            _ => Err(StoreError::Conflict(format!(
                "more than one host is named {id_or_name:?}: use its id"
            ))),
        }
    }

    pub async fn list_hosts(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<crate::Paged<HostRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {HOST_COLS} FROM hosts WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(cursor.unwrap_or(""))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let hosts = rows.iter().map(host).collect::<Result<Vec<_>>>()?;
        Ok(crate::paged(hosts, limit, |h| &h.id))
    }

    pub async fn set_host_cordoned(&self, id: &str, cordoned: bool) -> Result<HostRecord> {
        let res = sqlx::query("UPDATE hosts SET cordoned = $2 WHERE id = $1")
            .bind(id)
            .bind(i64::from(cordoned))
            .execute(&self.pool)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("host {id:?}")));
        }
        self.host(id).await
    }

    pub async fn delete_host(&self, id: &str) -> Result<()> {
        let res = sqlx::query("DELETE FROM hosts WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("host {id:?}")));
        }
        Ok(())
    }
}
