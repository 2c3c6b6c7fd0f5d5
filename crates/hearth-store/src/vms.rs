//! VMs: the user's record of each VM (spec, placement, desired state) and the state its
//! agent last observed. Observed state is applied only when newer than what is stored.

use sqlx::any::AnyRow;

use crate::{col, now_ms, paged, unique, Paged, Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct VmRecord {
    pub id: String,
    pub name: String,
    pub host_id: Option<String>,
    pub image: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// The VM's own disk (0: none).
    pub disk_mib: u64,
    /// `none`, `user`, or a managed network's name.
    pub network: String,
    /// On a managed network: its id, the VM's address there and its NIC's MAC.
    pub network_id: Option<String>,
    pub ip: Option<String>,
    pub mac: Option<String>,
    /// Why the network is not the one asked for.
    pub network_note: Option<String>,
    /// JSON list of port forwards.
    pub ports: String,
    /// A script run once at the first boot.
    pub user_data: String,
    pub vmm: String,
    pub state: String,
    pub desired_state: String,
    pub reason: Option<String>,
    pub console_tail: Option<String>,
    pub accelerator: Option<String>,
    pub boot_ms: Option<u64>,
    pub observed_at_ms: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub started_at_ms: Option<i64>,
    /// Set when the VM serves a function's pool.
    pub function_id: Option<String>,
    /// JSON object: the labels its host must have.
    pub host_labels: String,
}

/// What an agent observed about one VM.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub state: String,
    pub reason: Option<String>,
    pub console_tail: Option<String>,
    pub accelerator: Option<String>,
    pub boot_ms: Option<u64>,
    pub started_at_ms: Option<i64>,
    pub observed_at_ms: i64,
}

const COLS: &str = "id, name, host_id, image, vcpus, memory_mib, vmm, state, desired_state, \
                    reason, console_tail, accelerator, boot_ms, observed_at, created_at, \
                    updated_at, started_at, function_id, disk_mib, network, ports, user_data, network_id, ip, mac, \
                    network_note, host_labels";

fn vm(row: &AnyRow) -> Result<VmRecord> {
    Ok(VmRecord {
        id: col(row, "id")?,
        name: col(row, "name")?,
        host_id: col(row, "host_id")?,
        image: col(row, "image")?,
        vcpus: col::<i64>(row, "vcpus")? as u32,
        memory_mib: col::<i64>(row, "memory_mib")? as u64,
        vmm: col(row, "vmm")?,
        state: col(row, "state")?,
        desired_state: col(row, "desired_state")?,
        reason: col(row, "reason")?,
        console_tail: col(row, "console_tail")?,
        accelerator: col(row, "accelerator")?,
        boot_ms: col::<Option<i64>>(row, "boot_ms")?.map(|v| v as u64),
        observed_at_ms: col(row, "observed_at")?,
        created_at_ms: col(row, "created_at")?,
        updated_at_ms: col(row, "updated_at")?,
        started_at_ms: col(row, "started_at")?,
        function_id: col(row, "function_id")?,
        disk_mib: col::<i64>(row, "disk_mib")? as u64,
        network: col(row, "network")?,
        ports: col(row, "ports")?,
        user_data: col(row, "user_data")?,
        network_id: col(row, "network_id")?,
        ip: col(row, "ip")?,
        mac: col(row, "mac")?,
        network_note: col(row, "network_note")?,
        host_labels: col(row, "host_labels")?,
    })
}

fn name_taken(name: &str) -> impl FnOnce() -> String + '_ {
    move || format!("a VM named {name:?} already exists; pick another name or delete it")
}

impl Store {
    pub async fn insert_vm(&self, v: &VmRecord) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO vms ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
             $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27)"
        ))
        .bind(&v.id)
        .bind(&v.name)
        .bind(&v.host_id)
        .bind(&v.image)
        .bind(i64::from(v.vcpus))
        .bind(v.memory_mib as i64)
        .bind(&v.vmm)
        .bind(&v.state)
        .bind(&v.desired_state)
        .bind(&v.reason)
        .bind(&v.console_tail)
        .bind(&v.accelerator)
        .bind(v.boot_ms.map(|b| b as i64))
        .bind(v.observed_at_ms)
        .bind(v.created_at_ms)
        .bind(v.updated_at_ms)
        .bind(v.started_at_ms)
        .bind(&v.function_id)
        .bind(v.disk_mib as i64)
        .bind(&v.network)
        .bind(&v.ports)
        .bind(&v.user_data)
        .bind(&v.network_id)
        .bind(&v.ip)
        .bind(&v.mac)
        .bind(&v.network_note)
        .bind(&v.host_labels)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            // The three unique keys: the name, the address on its network, the MAC.
            let text = e.to_string();
            let is_unique = matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation());
            if is_unique && (text.contains("network_ip") || text.contains("vms.ip")) {
                StoreError::Conflict(format!(
                    "address {} is taken on network {}",
                    v.ip.as_deref().unwrap_or(""),
                    v.network
                ))
            } else if is_unique && text.contains("mac") {
                StoreError::Conflict(format!(
                    "MAC address {} is taken by another VM",
                    v.mac.as_deref().unwrap_or("")
                ))
            } else {
                unique(e, name_taken(&v.name))
            }
        })?;
        Ok(())
    }

    /// A VM by id, or by name.
    pub async fn vm(&self, id_or_name: &str) -> Result<VmRecord> {
        let row = sqlx::query(&format!(
            "SELECT {COLS} FROM vms WHERE id = $1 OR name = $1 \
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"
        ))
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("VM {id_or_name:?}")))?;
        vm(&row)
    }

    pub async fn vms(&self, after: Option<&str>, limit: u32) -> Result<Paged<VmRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM vms WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(vm).collect::<Result<Vec<_>>>()?;
        Ok(paged(items, limit, |v| &v.id))
    }

    pub async fn vms_on_host(&self, host_id: &str) -> Result<Vec<VmRecord>> {
        let rows = sqlx::query(&format!("SELECT {COLS} FROM vms WHERE host_id = $1"))
            .bind(host_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(vm).collect()
    }

    /// VMs that serve functions' pools.
    pub async fn function_vms(&self) -> Result<Vec<VmRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM vms WHERE function_id IS NOT NULL"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(vm).collect()
    }

    /// Every VM's placement and size, for capacity accounting.
    pub async fn all_vms(&self) -> Result<Vec<VmRecord>> {
        let rows = sqlx::query(&format!("SELECT {COLS} FROM vms"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(vm).collect()
    }

    /// Changes the size of a VM's own disk.
    pub async fn update_vm_disk(&self, id: &str, disk_mib: u64) -> Result<()> {
        sqlx::query("UPDATE vms SET disk_mib = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(disk_mib as i64)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces a VM's port forwards (a JSON list).
    pub async fn update_vm_ports(&self, id: &str, ports: &str) -> Result<()> {
        sqlx::query("UPDATE vms SET ports = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(ports)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Changes name, size or desired state.
    pub async fn update_vm_spec(
        &self,
        id: &str,
        name: &str,
        vcpus: u32,
        memory_mib: u64,
        desired_state: &str,
    ) -> Result<()> {
        let res = sqlx::query(
            "UPDATE vms SET name = $2, vcpus = $3, memory_mib = $4, desired_state = $5, \
             updated_at = $6 WHERE id = $1",
        )
        .bind(id)
        .bind(name)
        .bind(i64::from(vcpus))
        .bind(memory_mib as i64)
        .bind(desired_state)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| unique(e, name_taken(name)))?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("VM {id:?}")));
        }
        Ok(())
    }

    /// Applies what an agent observed, unless a newer observation is already stored.
    /// Returns whether it was applied.
    pub async fn observe_vm(&self, id: &str, o: &Observed) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE vms SET state = $2, reason = $3, console_tail = $4, \
             accelerator = COALESCE($5, accelerator), boot_ms = COALESCE($6, boot_ms), \
             started_at = COALESCE($7, started_at), observed_at = $8, updated_at = $9 \
             WHERE id = $1 AND observed_at <= $8",
        )
        .bind(id)
        .bind(&o.state)
        .bind(&o.reason)
        .bind(&o.console_tail)
        .bind(&o.accelerator)
        .bind(o.boot_ms.map(|b| b as i64))
        .bind(o.started_at_ms)
        .bind(o.observed_at_ms)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Moves a VM's record to another host, stopped there until started.
    pub async fn move_vm(&self, id: &str, host_id: &str) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE vms SET host_id = $2, state = 'stopped', reason = NULL, observed_at = $3, \
             updated_at = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(host_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_vm(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM vms WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
