//! Draining a host: it is cordoned, then each of its VMs moves to another host if it can,
//! or stays with the reason why.
//!
//! A move is cold: the VM stops here (gracefully), its run here is deleted, its record
//! moves, and it starts there if it should run. What lives on the host's disk cannot move
//! yet: a VM's own disk, attached volumes. A function's VM is removed instead; its pool
//! boots another elsewhere when one is needed.

use std::collections::BTreeMap;

use hearth_agent_api::pb;
use hearth_store::VmRecord;
use hearth_types::host::{DrainReport, DrainedVm, Host, StayedVm};

use super::App;
use crate::error::ApiResult;

impl App {
    pub async fn drain_host(&self, id_or_name: &str) -> ApiResult<DrainReport> {
        let host = self.set_cordoned(id_or_name, true).await?;
        let (mut moved, mut stayed) = (Vec::new(), Vec::new());
        for v in self.store().vms_on_host(&host.id).await? {
            match self.move_off(&v, &host).await {
                Ok(m) => moved.push(m),
                Err(reason) => stayed.push(StayedVm {
                    vm: v.name.clone(),
                    reason,
                }),
            }
        }
        tracing::info!(host = %host.name, moved = moved.len(), stayed = stayed.len(), "host drained");
        Ok(DrainReport {
            host: self.host(&host.id).await?,
            moved,
            stayed,
        })
    }

    /// Moves `v` off `from`, or says why it cannot.
    async fn move_off(&self, v: &VmRecord, from: &Host) -> Result<DrainedVm, String> {
        if v.function_id.is_some() {
            self.delete_vm(&v.id, false)
                .await
                .map_err(|e| format!("removing this function VM failed: {e}"))?;
            return Ok(DrainedVm {
                vm: v.name.clone(),
                to_host: None,
                how: "a function's VM: removed; its pool boots another on a host that is up \
                      when one is needed"
                    .into(),
            });
        }
        if v.disk_mib > 0 {
            return Err(format!(
                "its own disk ({} MiB) lives on this host, and disks do not move between \
                 hosts yet; stop it here, or recreate it elsewhere",
                v.disk_mib
            ));
        }
        let volumes = self
            .store()
            .volumes_of_vm(&v.id)
            .await
            .map_err(|e| e.to_string())?;
        if !volumes.is_empty() {
            return Err(format!(
                "volumes attached ({}) live on this host; detach them to move it",
                volumes
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let labels: BTreeMap<String, String> =
            serde_json::from_str(&v.host_labels).unwrap_or_default();
        let to = self
            .place(None, &v.image, v.vcpus, v.memory_mib, &labels, Some(&v.vmm))
            .await
            .map_err(|e| format!("no other host can take it: {e}"))?;
        if v.network_id.is_some() && !to.networks.managed {
            return Err(format!(
                "it is on managed network {}, which host {} cannot build",
                v.network, to.name
            ));
        }
        let run = v.desired_state == "running";
        // Not wanted running while it moves, so that no heartbeat starts it again here.
        self.store()
            .update_vm_spec(&v.id, &v.name, v.vcpus, v.memory_mib, "stopped")
            .await
            .map_err(|e| e.to_string())?;
        let off = async {
            let agent = self.host_client(&from.id).await?;
            if run {
                agent
                    .rpc()
                    .stop_vm(agent.request(pb::StopVmRequest {
                        id: v.id.clone(),
                        force: false,
                    }))
                    .await?;
            }
            agent
                .rpc()
                .delete_vm(agent.request(pb::VmRef { id: v.id.clone() }))
                .await?;
            Ok::<_, crate::error::ApiError>(())
        };
        if let Err(e) = off.await {
            // Still here: as it was.
            let desired = if run { "running" } else { "stopped" };
            let _ = self
                .store()
                .update_vm_spec(&v.id, &v.name, v.vcpus, v.memory_mib, desired)
                .await;
            return Err(format!("stopping it here failed: {e}"));
        }
        self.store()
            .move_vm(&v.id, &to.id)
            .await
            .map_err(|e| e.to_string())?;
        if !run {
            return Ok(DrainedVm {
                vm: v.name.clone(),
                to_host: Some(to.name),
                how: "moved, stopped".into(),
            });
        }
        let started = async {
            self.store()
                .update_vm_spec(&v.id, &v.name, v.vcpus, v.memory_mib, "running")
                .await?;
            let moved = self.store().vm(&v.id).await?;
            self.start_on_agent(&moved).await
        };
        match started.await {
            Ok(()) => Ok(DrainedVm {
                vm: v.name.clone(),
                to_host: Some(to.name),
                how: "stopped here and started there (a cold move: the guest booted again)".into(),
            }),
            Err(e) => Ok(DrainedVm {
                vm: v.name.clone(),
                to_host: Some(to.name),
                how: format!("moved, but starting it there failed: {e}; `hearth vm start` retries"),
            }),
        }
    }
}
