//! Snapshots: taking one of a VM through its host's agent, recording it, restoring it into a
//! new VM or in place, deleting it. The files stay on the host that took it, so restores run
//! there; the agent checks that the snapshot fits before it starts anything.

use hearth_agent_api::pb;
use hearth_store::{now_ms, to_time, SnapshotRecord, VmRecord};
use hearth_types::new_id;
use hearth_types::snapshot::{CreateSnapshot, RestoreSnapshot, Snapshot};
use hearth_types::vm::{check_name, Vm, VmState};

use super::vms::{new_record, observed};
use super::{page, page_limit, App};
use crate::error::{ApiError, ApiResult};
use hearth_types::api::Page;

fn view(r: SnapshotRecord) -> Snapshot {
    Snapshot {
        size_bytes: r.memory_bytes + r.disk_bytes,
        profile: serde_json::from_str(&r.profile).unwrap_or(serde_json::Value::Null),
        id: r.id,
        name: r.name,
        vm_id: r.vm_id,
        vm_name: r.vm_name,
        host_id: r.host_id,
        image: r.image,
        vcpus: r.vcpus,
        memory_mib: r.memory_mib,
        disk_mib: r.disk_mib,
        memory_bytes: r.memory_bytes,
        disk_bytes: r.disk_bytes,
        save_ms: r.save_ms,
        function_id: r.function_id,
        created_at: to_time(r.created_at_ms),
    }
}

/// The VMM that saved a snapshot, from its profile (QEMU's when unreadable: the only one
/// before there was a choice).
fn snapshot_vmm(s: &SnapshotRecord) -> String {
    serde_json::from_str::<serde_json::Value>(&s.profile)
        .ok()
        .and_then(|p| p["vmm"].as_str().map(str::to_string))
        .unwrap_or_else(|| "qemu".into())
}

/// `prefix-suffix`, the prefix cut so that the whole is a valid name.
fn derived_name(prefix: &str, suffix: &str) -> String {
    let room = 63 - suffix.len() - 1;
    let p = prefix[..prefix.len().min(room)].trim_end_matches('-');
    format!("{p}-{suffix}")
}

impl App {
    pub async fn create_snapshot(&self, vm: &str, req: CreateSnapshot) -> ApiResult<Snapshot> {
        let v = self.store().vm(vm).await?;
        let name = match req.name {
            Some(n) => n,
            None => derived_name(
                &v.name,
                &chrono::Utc::now().format("%Y%m%d-%H%M%S-%3f").to_string(),
            ),
        };
        check_name("snapshot", &name).map_err(ApiError::BadRequest)?;
        if self.store().snapshot(&name).await.is_ok() {
            return Err(ApiError::Conflict(format!(
                "a snapshot named {name:?} already exists; pick another name"
            )));
        }
        let s = self.take_snapshot(&v, name, None).await?;
        Ok(view(s))
    }

    /// Snapshots a running or paused VM on its agent and records it (`function` marks a
    /// function's cold-start snapshot with what it holds).
    pub(crate) async fn take_snapshot(
        &self,
        v: &VmRecord,
        name: String,
        function: Option<(&str, &str)>,
    ) -> ApiResult<SnapshotRecord> {
        let state: VmState = v.state.parse().unwrap_or(VmState::Failed);
        if !matches!(state, VmState::Running | VmState::Paused) {
            return Err(ApiError::Conflict(format!(
                "VM {} is {state}: only a running or paused VM can be snapshotted",
                v.name
            )));
        }
        let agent = self.agent_for(v).await?;
        let id = new_id();
        let info = agent
            .rpc()
            .snapshot_vm(agent.request(pb::SnapshotVmRequest {
                vm_id: v.id.clone(),
                snapshot_id: id.clone(),
            }))
            .await?
            .into_inner();
        let record = SnapshotRecord {
            id,
            name,
            vm_id: v.id.clone(),
            vm_name: v.name.clone(),
            host_id: v.host_id.clone().unwrap_or_default(),
            image: v.image.clone(),
            vcpus: v.vcpus,
            memory_mib: v.memory_mib,
            disk_mib: v.disk_mib,
            network: v.network.clone(),
            memory_bytes: info.memory_bytes,
            disk_bytes: info.disk_bytes,
            save_ms: info.save_ms,
            profile: info.profile_json,
            function_id: function.map(|(f, _)| f.to_string()),
            function_key: function.map(|(_, k)| k.to_string()),
            created_at_ms: now_ms(),
        };
        if let Err(e) = self.store().insert_snapshot(&record).await {
            // Unrecorded files would never be cleaned up.
            let _ = agent
                .rpc()
                .delete_snapshot(agent.request(pb::SnapshotRef {
                    id: record.id.clone(),
                }))
                .await;
            return Err(e.into());
        }
        Ok(record)
    }

    pub async fn snapshot(&self, id_or_name: &str) -> ApiResult<Snapshot> {
        Ok(view(self.store().snapshot(id_or_name).await?))
    }

    pub async fn list_snapshots(
        &self,
        vm: Option<&str>,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> ApiResult<Page<Snapshot>> {
        let vm_id = match vm {
            Some(v) => Some(self.store().vm(v).await?.id),
            None => None,
        };
        let p = self
            .store()
            .snapshots(vm_id.as_deref(), cursor, page_limit(limit)?)
            .await?;
        Ok(page(p, view))
    }

    /// Removes a snapshot's files on its host, then its record.
    pub async fn delete_snapshot(&self, id_or_name: &str) -> ApiResult<()> {
        let s = self.store().snapshot(id_or_name).await?;
        let agent = self.host_client(&s.host_id).await.map_err(|e| {
            ApiError::Unavailable(format!(
                "snapshot {}'s host cannot be reached to delete its files ({e}); retry when it is up",
                s.name
            ))
        })?;
        agent
            .rpc()
            .delete_snapshot(agent.request(pb::SnapshotRef { id: s.id.clone() }))
            .await?;
        self.store().delete_snapshot(&s.id).await?;
        Ok(())
    }

    /// Starts a new VM from a snapshot, or with `in_place` rolls its VM back to it.
    pub async fn restore_snapshot(&self, id_or_name: &str, req: RestoreSnapshot) -> ApiResult<Vm> {
        let s = self.store().snapshot(id_or_name).await?;
        if req.in_place {
            if req.name.is_some() {
                return Err(ApiError::bad_request(
                    "name and in_place exclude each other: in place, the VM keeps its name",
                ));
            }
            return self.restore_in_place(&s).await;
        }
        let name = match req.name {
            Some(n) => n,
            None => derived_name(&s.vm_name, &hearth_types::short_suffix()),
        };
        self.restore_snapshot_as(&s, name, None).await
    }

    /// A new VM named `name` from snapshot `s`, on the snapshot's host (`function_id` marks
    /// it as serving that function's pool).
    pub(crate) async fn restore_snapshot_as(
        &self,
        s: &SnapshotRecord,
        name: String,
        function_id: Option<&str>,
    ) -> ApiResult<Vm> {
        check_name("VM", &name).map_err(ApiError::BadRequest)?;
        if self.store().vm(&name).await.is_ok() {
            return Err(ApiError::Conflict(format!(
                "a VM named {name:?} already exists; pick another name with --name"
            )));
        }

        // The files are on the snapshot's host, for its VMM: the clone runs there, on that
        // VMM, or nowhere.
        let vmm = snapshot_vmm(s);
        let host = self
            .place(
                Some(&s.host_id),
                &s.image,
                s.vcpus,
                s.memory_mib,
                &Default::default(),
                Some(&vmm),
            )
            .await?;
        // The same network, with an address and a MAC of its own (the restored guest is
        // told them); no forwards: their host ports belong to the original.
        let network = self.attachment(Some(&s.network), None, &[], &host).await?;
        if network.network != s.network && network.network_id.is_none() {
            return Err(ApiError::Conflict(format!(
                "snapshot {} is of a VM on managed network {}, and host {} may not manage \
                 networks now",
                s.name, s.network, host.name
            )));
        }
        let mut record = new_record(
            name,
            &host.id,
            s.image.clone(),
            (s.vcpus, s.memory_mib, s.disk_mib),
            (network, &[]),
            true,
            function_id,
        );
        record.vmm = vmm;
        self.insert_vm_with_address(&mut record).await?;
        if let Err(e) = self.restore_on_agent(&record, &s.id).await {
            // The agent leaves nothing behind when it refuses; neither do we.
            let _ = self.store().delete_vm(&record.id).await;
            return Err(e);
        }
        self.vm(&record.id).await
    }

    async fn restore_in_place(&self, s: &SnapshotRecord) -> ApiResult<Vm> {
        let v = self.store().vm(&s.vm_id).await.map_err(|_| {
            ApiError::Conflict(format!(
                "VM {} that snapshot {} was taken of is gone; restore it as a new VM instead",
                s.vm_name, s.name
            ))
        })?;
        if v.host_id.as_deref() != Some(s.host_id.as_str()) {
            return Err(ApiError::Conflict(format!(
                "VM {} has moved off the host that holds snapshot {}",
                v.name, s.name
            )));
        }
        self.store()
            .update_vm_spec(&v.id, &v.name, v.vcpus, v.memory_mib, "running")
            .await?;
        if let Err(e) = self.restore_on_agent(&v, &s.id).await {
            // Refused: the VM stays as it was, wanted as it was.
            self.store()
                .update_vm_spec(&v.id, &v.name, v.vcpus, v.memory_mib, &v.desired_state)
                .await?;
            return Err(e);
        }
        self.vm(&v.id).await
    }

    pub(crate) async fn restore_on_agent(&self, v: &VmRecord, snapshot_id: &str) -> ApiResult<()> {
        let agent = self.agent_for(v).await?;
        let status = agent
            .rpc()
            .restore_vm(agent.request(pb::RestoreVmRequest {
                spec: Some(self.spec(v).await?),
                snapshot_id: snapshot_id.to_string(),
            }))
            .await?
            .into_inner();
        self.observe(&v.id, &observed(&status)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn derived_names_are_valid_names() {
        let long = "a".repeat(63);
        for prefix in ["web", &long, "ends-with-dash-"] {
            let n = super::derived_name(prefix, "20261123-101010-123");
            assert!(hearth_types::vm::check_name("VM", &n).is_ok(), "{n}");
        }
    }
}
