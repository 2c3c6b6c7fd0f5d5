//! Volumes as the API shows them: disks that outlive VMs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Volume {
    pub id: String,
    pub name: String,
    pub size_mib: u64,
    /// The host holding its file (set when it is first attached).
    pub host_id: Option<String>,
    /// The VM it is attached to.
    pub vm_id: Option<String>,
    /// Where the guest mounts it (`/volumes/<name>`).
    pub mount_path: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /v1/volumes`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// 1–63 lowercase letters, digits and dashes; the guest mounts it at `/volumes/<name>`.
    pub name: String,
    /// 16–1048576.
    pub size_mib: u64,
}

/// `POST /v1/volumes/{id}/attach`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachVolume {
    /// The VM (id or name).
    pub vm: String,
}

/// `PATCH /v1/volumes/{id}`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeVolume {
    /// The new size: larger than the current one (volumes only grow).
    pub size_mib: u64,
}

/// What an attach, detach or resize did, and when the guest sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VolumeChange {
    pub volume: Volume,
    /// False when the VM runs: its machine type has no hot-plug, so the change applies at
    /// the VM's next start.
    pub applied_now: bool,
    pub message: String,
}
