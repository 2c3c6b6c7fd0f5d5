//! Templates: a named VM spec (image, size, disk, network, volumes, user data), checked when
//! it is saved, and instantiated into VMs. Instantiating makes the VM stopped, makes and
//! attaches its volumes, then starts it; if any step fails, what was made is removed.

use hearth_store::{now_ms, to_time, TemplateRecord};
use hearth_types::api::Page;
use hearth_types::new_id;
use hearth_types::template::{CreateTemplate, Instantiate, Template, TemplateSpec};
use hearth_types::vm::{check_name, CreateVm, Vm};
use hearth_types::volume::{AttachVolume, CreateVolume};

use super::{page, page_limit, vms, volumes, App};
use crate::error::{ApiError, ApiResult};

fn view(r: TemplateRecord) -> Template {
    Template {
        id: r.id,
        name: r.name,
        spec: serde_json::from_str(&r.spec).unwrap_or_default(),
        created_at: to_time(r.created_at_ms),
    }
}

/// What can be checked before any VM exists, with the checks a VM's create makes.
fn check(spec: &TemplateSpec) -> ApiResult<()> {
    vms::check_size(
        spec.vcpus.unwrap_or(vms::DEFAULT_VCPUS),
        spec.memory_mib.unwrap_or(vms::DEFAULT_MEMORY_MIB),
    )?;
    vms::check_disk(spec.disk_mib.unwrap_or(0))?;
    if let Some(n) = &spec.network {
        if !matches!(n.as_str(), "none" | "user") {
            check_name("network", n).map_err(ApiError::BadRequest)?;
        }
    }
    vms::check_user_data(spec.user_data.as_deref().unwrap_or(""))?;
    if let Some(vmm) = &spec.vmm {
        let vcpus = spec.vcpus.unwrap_or(vms::DEFAULT_VCPUS);
        vms::check_vmm(vmm, vcpus, spec.network.as_deref())?;
    }
    if spec.volumes.len() > 8 {
        return Err(ApiError::bad_request("at most 8 volumes per template"));
    }
    for (i, v) in spec.volumes.iter().enumerate() {
        check_name("volume", &v.name).map_err(ApiError::BadRequest)?;
        volumes::check_size(v.size_mib)
            .map_err(|e| ApiError::bad_request(format!("volume {}: {e}", v.name)))?;
        if spec.volumes[..i].iter().any(|o| o.name == v.name) {
            return Err(ApiError::bad_request(format!(
                "volume {} is named twice",
                v.name
            )));
        }
    }
    Ok(())
}

impl App {
    pub async fn create_template(&self, req: CreateTemplate) -> ApiResult<Template> {
        check_name("template", &req.name).map_err(ApiError::BadRequest)?;
        check(&req.spec)?;
        let r = TemplateRecord {
            id: new_id(),
            name: req.name,
            spec: serde_json::to_string(&req.spec).map_err(|e| ApiError::Internal(e.into()))?,
            created_at_ms: now_ms(),
        };
        self.store().insert_template(&r).await?;
        Ok(view(r))
    }

    pub async fn template(&self, id_or_name: &str) -> ApiResult<Template> {
        Ok(view(self.store().template(id_or_name).await?))
    }

    pub async fn list_templates(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> ApiResult<Page<Template>> {
        let p = self.store().templates(cursor, page_limit(limit)?).await?;
        Ok(page(p, view))
    }

    pub async fn delete_template(&self, id_or_name: &str) -> ApiResult<()> {
        let t = self.store().template(id_or_name).await?;
        self.store().delete_template(&t.id).await?;
        Ok(())
    }

    pub async fn instantiate(&self, id_or_name: &str, req: Instantiate) -> ApiResult<Vm> {
        let t = self.template(id_or_name).await?;
        let spec = t.spec;
        let vm = self
            .create_vm(CreateVm {
                name: req.name.clone(),
                image: spec.image.clone(),
                vcpus: spec.vcpus,
                memory_mib: spec.memory_mib,
                disk_mib: spec.disk_mib,
                network: spec.network.clone(),
                mac: None,
                ports: Vec::new(),
                user_data: spec.user_data.clone(),
                start: Some(false),
                host_id: req.host_id,
                host_labels: Default::default(),
                vmm: spec.vmm.clone(),
            })
            .await?;
        let mut made = Vec::new();
        let attached = async {
            for v in &spec.volumes {
                let vol = self
                    .create_volume(CreateVolume {
                        name: format!("{}-{}", vm.name, v.name),
                        size_mib: v.size_mib,
                    })
                    .await?;
                made.push(vol.id.clone());
                self.attach_volume(&vol.id, AttachVolume { vm: vm.id.clone() })
                    .await?;
            }
            self.start_vm(&vm.id).await
        }
        .await;
        if attached.is_err() {
            let _ = self.delete_vm(&vm.id, false).await;
            for id in &made {
                let _ = self.delete_volume(id).await;
            }
        }
        attached
    }
}
