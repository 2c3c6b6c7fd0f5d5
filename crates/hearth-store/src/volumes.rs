//! Volumes as recorded: size, the host holding the file, the VM it is attached to. Attaching
//! is one conditional update, so two attaches at once cannot both win.

use sqlx::any::AnyRow;

use crate::{col, now_ms, paged, unique, Paged, Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct VolumeRecord {
    pub id: String,
    pub name: String,
    pub size_mib: u64,
    pub host_id: Option<String>,
    pub vm_id: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

const COLS: &str = "id, name, size_mib, host_id, vm_id, created_at, updated_at";

fn volume(row: &AnyRow) -> Result<VolumeRecord> {
    Ok(VolumeRecord {
        id: col(row, "id")?,
        name: col(row, "name")?,
        size_mib: col::<i64>(row, "size_mib")? as u64,
        host_id: col(row, "host_id")?,
        vm_id: col(row, "vm_id")?,
        created_at_ms: col(row, "created_at")?,
        updated_at_ms: col(row, "updated_at")?,
    })
}

impl Store {
    pub async fn insert_volume(&self, v: &VolumeRecord) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO volumes ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&v.id)
        .bind(&v.name)
        .bind(v.size_mib as i64)
        .bind(&v.host_id)
        .bind(&v.vm_id)
        .bind(v.created_at_ms)
        .bind(v.updated_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            unique(e, || {
                format!(
                    "a volume named {:?} already exists; pick another name",
                    v.name
                )
            })
        })?;
        Ok(())
    }

    /// A volume by id, or by name.
    pub async fn volume(&self, id_or_name: &str) -> Result<VolumeRecord> {
        let row = sqlx::query(&format!(
            "SELECT {COLS} FROM volumes WHERE id = $1 OR name = $1 \
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"
        ))
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("volume {id_or_name:?}")))?;
        volume(&row)
    }

    pub async fn volumes(&self, after: Option<&str>, limit: u32) -> Result<Paged<VolumeRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM volumes WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(volume).collect::<Result<Vec<_>>>()?;
        Ok(paged(items, limit, |v| &v.id))
    }

    /// The volumes attached to a VM, in the order they were created.
    pub async fn volumes_of_vm(&self, vm_id: &str) -> Result<Vec<VolumeRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM volumes WHERE vm_id = $1 ORDER BY created_at, id"
        ))
        .bind(vm_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(volume).collect()
    }

    /// Attaches a volume to a VM on `host_id` if it is free and lives there (or nowhere
    /// yet). Returns whether it did.
    pub async fn attach_volume(&self, id: &str, vm_id: &str, host_id: &str) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE volumes SET vm_id = $2, host_id = $3, updated_at = $4 \
             WHERE id = $1 AND vm_id IS NULL AND (host_id IS NULL OR host_id = $3)",
        )
        .bind(id)
        .bind(vm_id)
        .bind(host_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Detaches a volume (or, with `vm_id`, every volume of that VM).
    pub async fn detach_volumes(&self, id: Option<&str>, vm_id: Option<&str>) -> Result<()> {
        if id.is_none() && vm_id.is_none() {
            return Ok(()); // never "every volume"
        }
        sqlx::query(
            "UPDATE volumes SET vm_id = NULL, updated_at = $3 \
             WHERE ($1 = '' OR id = $1) AND ($2 = '' OR vm_id = $2)",
        )
        .bind(id.unwrap_or(""))
        .bind(vm_id.unwrap_or(""))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn resize_volume(&self, id: &str, size_mib: u64) -> Result<()> {
        sqlx::query("UPDATE volumes SET size_mib = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(size_mib as i64)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_volume(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM volumes WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
