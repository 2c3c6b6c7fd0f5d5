//! Volumes: disks that outlive VMs. A volume is recorded first and gets its file on a host
//! when a VM it is attached to starts there (the agent creates it, or grows it to its size),
//! so creating one touches no host. The VM's machine type has no hot-plug: an attach to a
//! running VM applies at its next start, and a detach needs the VM stopped (else its QEMU
//! would keep writing a volume another VM may take).

use hearth_agent_api::pb;
use hearth_store::{now_ms, to_time, VolumeRecord};
use hearth_types::api::Page;
use hearth_types::new_id;
use hearth_types::vm::{check_name, VmState};
use hearth_types::volume::{AttachVolume, CreateVolume, ResizeVolume, Volume, VolumeChange};

use super::vms::DISK_MIB;
use super::{page, page_limit, App};
use crate::error::{ApiError, ApiResult};

fn view(r: VolumeRecord) -> Volume {
    Volume {
        mount_path: format!("/volumes/{}", r.name),
        id: r.id,
        name: r.name,
        size_mib: r.size_mib,
        host_id: r.host_id,
        vm_id: r.vm_id,
        created_at: to_time(r.created_at_ms),
        updated_at: to_time(r.updated_at_ms),
    }
}

pub(crate) fn check_size(size_mib: u64) -> ApiResult<()> {
    if !DISK_MIB.contains(&size_mib) {
        return Err(ApiError::bad_request(format!(
            "size_mib must be {}–{}, got {size_mib}",
            DISK_MIB.start(),
            DISK_MIB.end()
        )));
    }
    Ok(())
}

impl App {
    pub async fn create_volume(&self, req: CreateVolume) -> ApiResult<Volume> {
        check_name("volume", &req.name).map_err(ApiError::BadRequest)?;
        check_size(req.size_mib)?;
        let now = now_ms();
        let r = VolumeRecord {
            id: new_id(),
            name: req.name,
            size_mib: req.size_mib,
            host_id: None,
            vm_id: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        self.store().insert_volume(&r).await?;
        Ok(view(r))
    }

    pub async fn volume(&self, id_or_name: &str) -> ApiResult<Volume> {
        Ok(view(self.store().volume(id_or_name).await?))
    }

    pub async fn list_volumes(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> ApiResult<Page<Volume>> {
        let p = self.store().volumes(cursor, page_limit(limit)?).await?;
        Ok(page(p, view))
    }

    /// The volumes a VM's agent should attach, in order.
    pub(crate) async fn volume_specs(&self, vm_id: &str) -> ApiResult<Vec<pb::VolumeSpec>> {
        Ok(self
            .store()
            .volumes_of_vm(vm_id)
            .await?
            .into_iter()
            .map(|v| pb::VolumeSpec {
                id: v.id,
                name: v.name,
                size_mib: v.size_mib,
            })
            .collect())
    }

    pub async fn attach_volume(
        &self,
        id_or_name: &str,
        req: AttachVolume,
    ) -> ApiResult<VolumeChange> {
        let vol = self.store().volume(id_or_name).await?;
        let vm = self.store().vm(&req.vm).await?;
        if vm.function_id.is_some() {
            return Err(ApiError::Conflict(format!(
                "VM {} serves a function's pool; attach volumes to your own VMs",
                vm.name
            )));
        }
        if let Some(other) = &vol.vm_id {
            let name = self
                .store()
                .vm(other)
                .await
                .map(|v| v.name)
                .unwrap_or_else(|_| other.clone());
            return Err(ApiError::Conflict(format!(
                "volume {} is already attached to VM {name}; detach it first",
                vol.name
            )));
        }
        let host = vm.host_id.clone().ok_or_else(|| {
            ApiError::Conflict(format!("VM {} is not placed on any host", vm.name))
        })?;
        if vol.host_id.as_deref().is_some_and(|h| h != host) {
            return Err(ApiError::Conflict(format!(
                "volume {} lives on host {} and VM {} runs on host {host}: a volume attaches only to VMs on its host",
                vol.name,
                vol.host_id.as_deref().unwrap_or_default(),
                vm.name
            )));
        }
        if self
            .store()
            .volumes_of_vm(&vm.id)
            .await?
            .iter()
            .any(|v| v.name == vol.name)
        {
            return Err(ApiError::Conflict(format!(
                "VM {} already has a volume named {}",
                vm.name, vol.name
            )));
        }
        if !self.store().attach_volume(&vol.id, &vm.id, &host).await? {
            return Err(ApiError::Conflict(format!(
                "volume {} was attached elsewhere meanwhile; retry",
                vol.name
            )));
        }
        let stopped = matches!(
            vm.state.parse().unwrap_or(VmState::Failed),
            VmState::Stopped | VmState::Failed | VmState::Creating
        );
        Ok(VolumeChange {
            volume: self.volume(&vol.id).await?,
            applied_now: stopped,
            message: if stopped {
                format!(
                    "attached to VM {}: it is mounted at /volumes/{} from its next start",
                    vm.name, vol.name
                )
            } else {
                format!(
                    "attached to VM {}, which is {}: its machine has no hot-plug, so the guest sees /volumes/{} after the VM restarts",
                    vm.name, vm.state, vol.name
                )
            },
        })
    }

    pub async fn detach_volume(&self, id_or_name: &str) -> ApiResult<VolumeChange> {
        let vol = self.store().volume(id_or_name).await?;
        let Some(vm_id) = &vol.vm_id else {
            return Err(ApiError::Conflict(format!(
                "volume {} is not attached",
                vol.name
            )));
        };
        if let Ok(vm) = self.store().vm(vm_id).await {
            let state: VmState = vm.state.parse().unwrap_or(VmState::Failed);
            if !matches!(
                state,
                VmState::Stopped | VmState::Failed | VmState::Creating
            ) {
                return Err(ApiError::Conflict(format!(
                    "VM {} is {state} and may be writing volume {}: stop it first",
                    vm.name, vol.name
                )));
            }
        }
        self.store().detach_volumes(Some(&vol.id), None).await?;
        Ok(VolumeChange {
            volume: self.volume(&vol.id).await?,
            applied_now: true,
            message: format!("detached volume {}", vol.name),
        })
    }

    /// Grows a volume; its file grows when a VM it is attached to next starts.
    pub async fn resize_volume(
        &self,
        id_or_name: &str,
        req: ResizeVolume,
    ) -> ApiResult<VolumeChange> {
        let vol = self.store().volume(id_or_name).await?;
        check_size(req.size_mib)?;
        if req.size_mib < vol.size_mib {
            return Err(ApiError::bad_request(format!(
                "volumes only grow: {} is {} MiB, asked for {} MiB",
                vol.name, vol.size_mib, req.size_mib
            )));
        }
        self.store().resize_volume(&vol.id, req.size_mib).await?;
        Ok(VolumeChange {
            volume: self.volume(&vol.id).await?,
            applied_now: false,
            message: format!(
                "volume {} is {} MiB from the next start of the VM it is attached to",
                vol.name, req.size_mib
            ),
        })
    }

    /// Deletes a detached volume and its file.
    pub async fn delete_volume(&self, id_or_name: &str) -> ApiResult<()> {
        let vol = self.store().volume(id_or_name).await?;
        if let Some(vm) = &vol.vm_id {
            let name = self
                .store()
                .vm(vm)
                .await
                .map(|v| v.name)
                .unwrap_or_else(|_| vm.clone());
            return Err(ApiError::Conflict(format!(
                "volume {} is attached to VM {name}; detach it first",
                vol.name
            )));
        }
        if let Some(host) = &vol.host_id {
            let agent = self.host_client(host).await.map_err(|e| {
                ApiError::Unavailable(format!(
                    "volume {}'s host cannot be reached to delete its file ({e}); retry when it is up",
                    vol.name
                ))
            })?;
            agent
                .rpc()
                .delete_volume(agent.request(pb::VolumeRef { id: vol.id.clone() }))
                .await?;
        }
        self.store().delete_volume(&vol.id).await?;
        Ok(())
    }
}
