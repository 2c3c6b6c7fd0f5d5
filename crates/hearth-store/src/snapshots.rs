//! Snapshots as recorded: where each one is (its host holds the files), what it was taken
//! of, its sizes and the profile a restore must match.

use sqlx::any::AnyRow;

use crate::{col, paged, unique, Paged, Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct SnapshotRecord {
    pub id: String,
    pub name: String,
    pub vm_id: String,
    pub vm_name: String,
    pub host_id: String,
    pub image: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
    /// The VM's network kind (a clone gets the same).
    pub network: String,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub save_ms: u64,
    /// JSON.
    pub profile: String,
    /// Set for a function's cold-start snapshot, with what it holds (code, memory, mode).
    pub function_id: Option<String>,
    pub function_key: Option<String>,
    pub created_at_ms: i64,
}

const COLS: &str = "id, name, vm_id, vm_name, host_id, image, vcpus, memory_mib, disk_mib, \
                    memory_bytes, disk_bytes, save_ms, profile, function_id, function_key, \
                    created_at, network";

fn snapshot(row: &AnyRow) -> Result<SnapshotRecord> {
    let u = |c: &str| col::<i64>(row, c).map(|v| v as u64);
    Ok(SnapshotRecord {
        id: col(row, "id")?,
        name: col(row, "name")?,
        vm_id: col(row, "vm_id")?,
        vm_name: col(row, "vm_name")?,
        host_id: col(row, "host_id")?,
        image: col(row, "image")?,
        vcpus: u("vcpus")? as u32,
        memory_mib: u("memory_mib")?,
        disk_mib: u("disk_mib")?,
        memory_bytes: u("memory_bytes")?,
        disk_bytes: u("disk_bytes")?,
        save_ms: u("save_ms")?,
        profile: col(row, "profile")?,
        function_id: col(row, "function_id")?,
        function_key: col(row, "function_key")?,
        created_at_ms: col(row, "created_at")?,
        network: col(row, "network")?,
    })
}

impl Store {
    pub async fn insert_snapshot(&self, s: &SnapshotRecord) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO snapshots ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14, $15, $16, $17)"
        ))
        .bind(&s.id)
        .bind(&s.name)
        .bind(&s.vm_id)
        .bind(&s.vm_name)
        .bind(&s.host_id)
        .bind(&s.image)
        .bind(i64::from(s.vcpus))
        .bind(s.memory_mib as i64)
        .bind(s.disk_mib as i64)
        .bind(s.memory_bytes as i64)
        .bind(s.disk_bytes as i64)
        .bind(s.save_ms as i64)
        .bind(&s.profile)
        .bind(&s.function_id)
        .bind(&s.function_key)
        .bind(s.created_at_ms)
        .bind(&s.network)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            unique(e, || {
                format!(
                    "a snapshot named {:?} already exists; pick another name",
                    s.name
                )
            })
        })?;
        Ok(())
    }

    /// A snapshot by id, or by name.
    pub async fn snapshot(&self, id_or_name: &str) -> Result<SnapshotRecord> {
        let row = sqlx::query(&format!(
            "SELECT {COLS} FROM snapshots WHERE id = $1 OR name = $1 \
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"
        ))
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("snapshot {id_or_name:?}")))?;
        snapshot(&row)
    }

    /// Snapshots in id order, optionally only those of one VM.
    pub async fn snapshots(
        &self,
        vm_id: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Paged<SnapshotRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM snapshots WHERE id > $1 AND ($2 = '' OR vm_id = $2) \
             ORDER BY id LIMIT $3"
        ))
        .bind(after.unwrap_or(""))
        .bind(vm_id.unwrap_or(""))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(snapshot).collect::<Result<Vec<_>>>()?;
        Ok(paged(items, limit, |s| &s.id))
    }

    /// Every snapshot of a VM (to delete them with it).
    pub async fn snapshots_of_vm(&self, vm_id: &str) -> Result<Vec<SnapshotRecord>> {
        let rows = sqlx::query(&format!("SELECT {COLS} FROM snapshots WHERE vm_id = $1"))
            .bind(vm_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(snapshot).collect()
    }

    /// A function's cold-start snapshots (every host's), optionally only those holding `key`.
    pub async fn function_snapshots(
        &self,
        function_id: &str,
        key: Option<&str>,
    ) -> Result<Vec<SnapshotRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM snapshots WHERE function_id = $1 \
             AND ($2 = '' OR function_key = $2) ORDER BY created_at"
        ))
        .bind(function_id)
        .bind(key.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(snapshot).collect()
    }

    pub async fn delete_snapshot(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM snapshots WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
