//! Snapshots as the API shows them, and the requests that make and use them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A VM's memory and disk, saved on its host.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    /// The VM it was taken of (which may since have been deleted).
    pub vm_id: String,
    pub vm_name: String,
    /// The host holding its files; restores run there.
    pub host_id: String,
    pub image: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
    /// The saved memory and device state, in bytes.
    pub memory_bytes: u64,
    /// The saved disk (allocated bytes).
    pub disk_bytes: u64,
    /// `memory_bytes + disk_bytes`.
    pub size_bytes: u64,
    /// How long the VM was paused to take it.
    pub save_ms: u64,
    /// What restoring it needs: VMM and version, machine, accelerator, CPU model, kernel,
    /// initramfs, root filesystem, vCPUs, memory, devices.
    #[schema(value_type = Object)]
    pub profile: serde_json::Value,
    /// Set when it is a function's cold-start snapshot.
    pub function_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/vms/{id}/snapshots`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// 1–63 lowercase letters, digits and dashes (default: the VM's name and the time).
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /v1/snapshots/{id}/restore`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreSnapshot {
    /// The new VM's name (default: the snapshot's VM name and a random suffix). Not with
    /// `in_place`.
    #[serde(default)]
    pub name: Option<String>,
    /// Roll the snapshot's own VM back to it instead of starting a new VM.
    #[serde(default)]
    pub in_place: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SnapshotListQuery {
    /// Only this VM's snapshots (id or name).
    pub vm: Option<String>,
    pub cursor: Option<String>,
    /// 1–1000 (default 100).
    pub limit: Option<u32>,
}
