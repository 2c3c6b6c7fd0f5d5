//! Managed networks as recorded, and the address book: the addresses VMs hold on each (the
//! `vms` table's unique `(network_id, ip)` keeps two VMs from holding one).

use sqlx::any::AnyRow;

use crate::{col, unique, Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub cidr: String,
    pub gateway: String,
    pub bridge: Option<String>,
    /// A JSON list of name servers.
    pub dns: String,
    pub created_at_ms: i64,
}

const COLS: &str = "id, name, kind, cidr, gateway, bridge, dns, created_at";

fn network(row: &AnyRow) -> Result<NetworkRecord> {
    Ok(NetworkRecord {
        id: col(row, "id")?,
        name: col(row, "name")?,
        kind: col(row, "kind")?,
        cidr: col(row, "cidr")?,
        gateway: col(row, "gateway")?,
        bridge: col(row, "bridge")?,
        dns: col(row, "dns")?,
        created_at_ms: col(row, "created_at")?,
    })
}

impl Store {
    pub async fn insert_network(&self, n: &NetworkRecord) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO networks ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&n.id)
        .bind(&n.name)
        .bind(&n.kind)
        .bind(&n.cidr)
        .bind(&n.gateway)
        .bind(&n.bridge)
        .bind(&n.dns)
        .bind(n.created_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            unique(e, || {
                format!(
                    "a network named {:?} already exists; pick another name",
                    n.name
                )
            })
        })?;
        Ok(())
    }

    /// A network by id, or by name.
    pub async fn network(&self, id_or_name: &str) -> Result<NetworkRecord> {
        let row = sqlx::query(&format!(
            "SELECT {COLS} FROM networks WHERE id = $1 OR name = $1 \
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"
        ))
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("network {id_or_name:?}")))?;
        network(&row)
    }

    /// Every network (there are few: each needs a CIDR of its own).
    pub async fn networks(&self) -> Result<Vec<NetworkRecord>> {
        let rows = sqlx::query(&format!("SELECT {COLS} FROM networks ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(network).collect()
    }

    /// The addresses VMs hold on a network.
    pub async fn addresses_in_use(&self, network_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT ip FROM vms WHERE network_id = $1 AND ip IS NOT NULL")
            .bind(network_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| col(r, "ip")).collect()
    }

    /// Deletes a network that no VM is on; false when one is.
    pub async fn delete_network(&self, id: &str) -> Result<bool> {
        let res = sqlx::query(
            "DELETE FROM networks WHERE id = $1 \
             AND NOT EXISTS (SELECT 1 FROM vms WHERE network_id = $1)",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }
}
