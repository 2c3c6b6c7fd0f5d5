//! Templates: what a VM is made from, instantiated by name.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What each instance gets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// An image name (default `default`).
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub vcpus: Option<u32>,
    #[serde(default)]
    pub memory_mib: Option<u64>,
    #[serde(default)]
    pub disk_mib: Option<u64>,
    /// `none` or `user`.
    #[serde(default)]
    pub network: Option<String>,
    /// Volumes made for each instance, named `<vm>-<name>` (so mounted at
    /// `/volumes/<vm>-<name>`), and attached to it.
    #[serde(default)]
    pub volumes: Vec<TemplateVolume>,
    /// A shell script the guest runs once, after the instance's first boot (at most 64 KiB;
    /// its output goes to /var/log/hearth-user-data.log in the guest).
    #[serde(default)]
    pub user_data: Option<String>,
    /// The VMM of each instance (see `CreateVm::vmm`).
    #[serde(default)]
    pub vmm: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateVolume {
    pub name: String,
    pub size_mib: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub spec: TemplateSpec,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/templates`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    /// 1–63 lowercase letters, digits and dashes.
    pub name: String,
    #[serde(default)]
    pub spec: TemplateSpec,
}

/// `POST /v1/templates/{id}/instantiate`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Instantiate {
    /// The new VM's name.
    pub name: String,
    /// Pin it to a host (id or name).
    #[serde(default)]
    pub host_id: Option<String>,
}
