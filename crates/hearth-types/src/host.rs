//! Hosts: the machines running a Hearth agent, what they report, and join tokens.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    /// Heartbeating and schedulable.
    Up,
    /// Missed its heartbeats.
    Down,
    /// Heartbeating, but takes no new VMs.
    Cordoned,
}

/// Resources of a host, or an allocation of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Resources {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
}

/// One hardware accelerator and whether VMs may use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Accelerator {
    /// `kvm` or `tcg`.
    pub name: String,
    pub usable: bool,
    /// Why it is not usable, or how that was decided.
    pub reason: Option<String>,
}

/// One VMM binary on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmmInfo {
    /// `qemu`, `firecracker` or `cloud-hypervisor`.
    pub name: String,
    pub usable: bool,
    pub version: Option<String>,
    pub path: Option<String>,
    /// Why it is not usable (binary missing, KVM unusable, version too old).
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Host {
    pub id: String,
    pub name: String,
    /// Where the manager reaches the agent's RPC API.
    pub address: String,
    pub status: HostStatus,
    pub cordoned: bool,
    pub agent_version: String,
    pub capacity: Resources,
    pub allocated: Resources,
    pub accelerators: Vec<Accelerator>,
    pub vmms: Vec<VmmInfo>,
    /// The images this host can boot.
    pub images: Vec<HostImage>,
    /// Disk use of VM disks and snapshots, as last reported.
    pub disk: Option<HostDisk>,
    /// Whether VMs here can join managed networks.
    pub networks: HostNetworks,
    /// The operator's labels (`hearth agent --label k=v`); a VM's `host_labels` must all
    /// match for it to be placed here.
    pub labels: std::collections::BTreeMap<String, String>,
    pub registered_at: DateTime<Utc>,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// Lifetime in minutes (default 60, at most 10080).
    pub ttl_minutes: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JoinToken {
    /// Give to `hearth agent --join-token`. Usable by many agents until it expires. From a
    /// manager serving TLS it ends with `.` and the cluster CA's SHA-256 (hex), which the
    /// agent checks the manager's CA against before it sends the token.
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// What an agent reports about its host, with every heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostReport {
    pub hostname: String,
    pub agent_version: String,
    pub capacity: Resources,
    pub accelerators: Vec<Accelerator>,
    pub vmms: Vec<VmmInfo>,
    #[serde(default)]
    pub images: Vec<HostImage>,
    #[serde(default)]
    pub disk: Option<HostDisk>,
    #[serde(default)]
    pub networks: HostNetworks,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Whether a host's agent may build managed networks (bridges, TAPs, NAT rules).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostNetworks {
    pub managed: bool,
    /// Why not, when it may not.
    pub note: Option<String>,
}

/// The agent's data dir's file system: what VM disks and snapshots take, what is left.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostDisk {
    pub vm_disks_bytes: u64,
    pub snapshots_bytes: u64,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// An image an agent has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostImage {
    pub name: String,
    pub kind: String,
    pub kernel_version: String,
    pub size_bytes: u64,
}

/// At most this many labels on a host, or asked for by a VM.
pub const MAX_LABELS: usize = 32;

/// Labels are `key=value` pairs: keys of 1–63 letters, digits, `.`, `_`, `-` or `/`;
/// values of at most 63 of the same.
pub fn check_labels(labels: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    let ok = |s: &str| {
        s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
    };
    if labels.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels"));
    }
    for (k, v) in labels {
        if k.is_empty() || !ok(k) {
            return Err(format!(
                "label key {k:?} must be 1–63 letters, digits, '.', '_', '-' or '/'"
            ));
        }
        if !ok(v) {
            return Err(format!(
                "label {k}'s value {v:?} must be at most 63 letters, digits, '.', '_', '-' or '/'"
            ));
        }
    }
    Ok(())
}

/// Parses `key=value` (a CLI flag) into a label.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("a label is KEY=VALUE, not {s:?}"))?;
    let one = std::collections::BTreeMap::from([(k.to_string(), v.to_string())]);
    check_labels(&one)?;
    Ok((k.to_string(), v.to_string()))
}

/// `POST /v1/hosts/{id}/drain`: the host, now cordoned, and what happened to each of its
/// VMs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DrainReport {
    pub host: Host,
    pub moved: Vec<DrainedVm>,
    /// The VMs that stay on the host, each with why.
    pub stayed: Vec<StayedVm>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DrainedVm {
    pub vm: String,
    /// The host it moved to (none for a function's VM, which is removed).
    pub to_host: Option<String>,
    pub how: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StayedVm {
    pub vm: String,
    pub reason: String,
}
