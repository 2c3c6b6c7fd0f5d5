//! The VM state machine of PRODUCT.md, in one place, so the agent's per-VM owner and the
//! manager agree on which transitions are legal.
//!
//! ```text
//! creating → starting → running ⇄ paused
//! running → stopping → stopped → starting
//! any → failed, any → deleting
//! ```
//!
//! `unknown` and `lost` are not states a VM moves through: they are how the manager shows
//! a VM whose host has gone silent.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Creating,
    Starting,
    Running,
    Paused,
    Stopping,
    Stopped,
    Failed,
    Deleting,
    /// Its host stopped heartbeating: it may still run there. Never stored: the manager
    /// shows it for a VM that should be running while its host is `down`.
    Unknown,
    /// Its host has been `down` longer than the bound (`vm_lost_after_ms`). When the host
    /// returns, the VM's state is what the host reports (started again if it should run).
    Lost,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "creating",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
            VmState::Failed => "failed",
            VmState::Deleting => "deleting",
            VmState::Unknown => "unknown",
            VmState::Lost => "lost",
        }
    }

    /// Whether `self → to` is a legal transition. Illegal ones are answered with 409.
    pub fn can_become(self, to: VmState) -> bool {
        use VmState::*;
        matches!(
            (self, to),
            (Creating, Starting)
                | (Creating, Stopped)
                | (Starting, Running)
                | (Running, Paused)
                | (Paused, Running)
                | (Running, Stopping)
                | (Paused, Stopping)
                | (Stopping, Stopped)
                | (Stopped, Starting)
                | (Failed, Starting)
                | (_, Failed)
                | (_, Deleting)
        ) && self != Deleting
    }
}

impl std::str::FromStr for VmState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use VmState::*;
        Ok(match s {
            "creating" => Creating,
            "starting" => Starting,
            "running" => Running,
            "paused" => Paused,
            "stopping" => Stopping,
            "stopped" => Stopped,
            "failed" => Failed,
            "deleting" => Deleting,
            "unknown" => Unknown,
            "lost" => Lost,
            other => return Err(format!("unknown VM state {other:?}")),
        })
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a user asks a VM to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Running,
    Stopped,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
        }
    }
}

/// A VM as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Vm {
    pub id: String,
    pub name: String,
    /// What the VM's agent last observed.
    pub state: VmState,
    pub desired_state: DesiredState,
    /// The host it is placed on.
    pub host_id: Option<String>,
    pub image: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// The VM's own writable disk, which holds its root filesystem's changes (0: none;
    /// changes live in memory).
    pub disk_mib: u64,
    /// `none`; `user`: QEMU user-mode networking (egress through the host's own
    /// connections; the guest is 10.0.2.15); or the name of a managed network.
    pub network: String,
    /// The managed network's id.
    pub network_id: Option<String>,
    /// The guest's address, when it has a network.
    pub ip: Option<String>,
    /// The NIC's MAC address, on a managed network.
    pub mac: Option<String>,
    /// Why the VM's network is not the one asked for (its host may not manage networks, so
    /// it has QEMU user-mode networking instead).
    pub network_note: Option<String>,
    /// Forwards from the host's loopback into the guest.
    pub ports: Vec<PortForward>,
    /// `qemu`, `firecracker` or `cloud-hypervisor`.
    pub vmm: String,
    /// `kvm` or `tcg`, once started.
    pub accelerator: Option<String>,
    /// Why it failed or stopped by itself.
    pub reason: Option<String>,
    /// The last serial console lines, kept when it failed.
    pub console_tail: Option<String>,
    /// Launch to guest agent answering, for the last boot.
    pub boot_ms: Option<u64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    /// The function whose pool this VM serves (such VMs come and go with the pool).
    pub function_id: Option<String>,
    /// The labels its host must have.
    pub host_labels: std::collections::BTreeMap<String, String>,
}

/// The VMMs a VM may ask for.
pub const VMMS: [&str; 3] = ["qemu", "firecracker", "cloud-hypervisor"];
/// Firecracker's most vCPUs.
pub const FIRECRACKER_MAX_VCPUS: u32 = 32;

/// Whether a VM with `vcpus`, on user-mode networking or not, can run on `vmm`, else why
/// not: Firecracker and Cloud Hypervisor have no user-mode networking, and Firecracker
/// runs 1 or an even number of vCPUs. The manager checks it before placing a VM, the
/// drivers before starting one.
pub fn vmm_fits(vmm: &str, vcpus: u32, user_net: bool) -> Result<(), String> {
    if !VMMS.contains(&vmm) {
        return Err(format!(
            "vmm must be one of {}, got {vmm:?}",
            VMMS.join(", ")
        ));
    }
    if vmm != "qemu" && user_net {
        return Err(format!(
            "{vmm} has no user-mode networking: put the VM on a managed network or on none, \
             or use --vmm qemu"
        ));
    }
    if vmm == "firecracker"
        && (vcpus == 0 || vcpus > FIRECRACKER_MAX_VCPUS || (vcpus > 1 && !vcpus.is_multiple_of(2)))
    {
        return Err(format!(
            "firecracker runs 1 or an even number of vCPUs up to {FIRECRACKER_MAX_VCPUS}, \
             not {vcpus}"
        ));
    }
    Ok(())
}

/// `POST /v1/vms`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVm {
    /// 1–63 lowercase letters, digits and dashes; also the guest's hostname.
    pub name: String,
    /// An image name (default `default`).
    #[serde(default)]
    pub image: Option<String>,
    /// 1–64 (default 1).
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// 128–1048576 (default 256).
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// The VM's own disk, keeping changes to its root filesystem across restarts and in
    /// snapshots: 0 (none: changes live in memory) or 16–1048576 MiB (default 1024). The
    /// file is sparse: it takes only what the guest writes.
    #[serde(default)]
    pub disk_mib: Option<u64>,
    /// A managed network (name or id); `user`: QEMU user-mode networking; or `none`.
    /// Default: the network named `default` when there is one, else `none`. On a host
    /// whose agent may not manage networks, a managed network becomes `user` and the VM's
    /// `network_note` says so.
    #[serde(default)]
    pub network: Option<String>,
    /// On a managed network: the NIC's MAC address (`02:00:00:00:00:01`; unicast).
    /// Default: a random locally administered one.
    #[serde(default)]
    pub mac: Option<String>,
    /// Host ports (on 127.0.0.1) forwarded into the guest; on a managed network TCP only.
    #[serde(default)]
    pub ports: Vec<PortForward>,
    /// A shell script the guest runs once, after its first boot (at most 64 KiB; output in
    /// /var/log/hearth-user-data.log).
    #[serde(default)]
    pub user_data: Option<String>,
    /// Start it at once (default true).
    #[serde(default)]
    pub start: Option<bool>,
    /// Pin it to a host (id or name).
    #[serde(default)]
    pub host_id: Option<String>,
    /// Place it only on a host with all these labels (`hearth agent --label k=v`).
    #[serde(default)]
    pub host_labels: std::collections::BTreeMap<String, String>,
    /// `qemu`, `firecracker` or `cloud-hypervisor`: the VM goes to a host where that VMM
    /// is usable. Default: the placed host's best usable one (Firecracker on hardware KVM
    /// when installed, else QEMU). Firecracker and Cloud Hypervisor have no user-mode
    /// networking; Firecracker runs 1 or an even number of vCPUs.
    #[serde(default)]
    pub vmm: Option<String>,
}

/// A host port (bound on 127.0.0.1) forwarded to a guest port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortForward {
    pub host_port: u16,
    pub guest_port: u16,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// `PATCH /v1/vms/{id}`: size changes need the VM stopped and apply at its next start.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVm {
    pub name: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
    /// Grows the VM's own disk (never shrinks it; a VM created without one keeps none).
    pub disk_mib: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PortQuery {
    /// `tcp` (default) or `udp`.
    pub protocol: Option<Protocol>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StopQuery {
    /// Kill the VMM instead of shutting the guest down.
    pub force: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// The state to wait for (default `running`).
    pub state: Option<VmState>,
    /// At most this long (1–600 s, default 60).
    pub timeout_s: Option<u64>,
}

/// `POST /v1/vms/{id}/exec`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecVm {
    /// The program and its arguments (no shell: use `["sh","-c","…"]` for one).
    pub command: Vec<String>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Text fed to the command's stdin (at most 1 MiB).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Killed after this long (1–3600 s, default 60).
    #[serde(default)]
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub cwd: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecResult {
    /// The command's exit code, or 128 + signal when a signal ended it.
    pub exit_code: i32,
    /// UTF-8 (invalid bytes replaced).
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    /// Output beyond 8 MiB per stream was dropped.
    pub truncated: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct VmMetrics {
    pub cpu_percent: f64,
    pub memory_total_mib: f64,
    pub memory_used_mib: f64,
    pub disk_total_mib: f64,
    pub disk_used_mib: f64,
    pub uptime_s: f64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub processes: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsoleQuery {
    /// How much of the log's end to return (bytes, at most 1048576, default 65536).
    pub tail_bytes: Option<u64>,
}

/// An image some host can boot.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Image {
    pub name: String,
    /// `initramfs` (a kernel plus an initramfs) or `rootfs` (a root filesystem booted with
    /// the default kernel and initramfs).
    pub kind: String,
    pub kernel_version: String,
    pub size_bytes: u64,
    /// The hosts that have it.
    pub hosts: Vec<String>,
}

/// `POST /v1/images/builds`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildImage {
    /// The image's name: 1–63 lowercase letters, digits and dashes (not `default` or
    /// `runtime-…`). An image of that name is replaced when the build is done.
    pub name: String,
    /// `debian` (the default and, for now, the only base): a minimal Debian bookworm.
    #[serde(default)]
    pub base: Option<String>,
    /// Debian packages to add (at most 64), e.g. `["python3", "curl"]`.
    #[serde(default)]
    pub packages: Vec<String>,
}

/// An image build's state on each host.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageBuild {
    pub name: String,
    pub hosts: Vec<crate::function::RuntimeHost>,
}

/// `POST /v1/images`: the body is the image's bytes.
#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportImage {
    /// The image's name: 1–63 lowercase letters, digits and dashes (not `default` or
    /// `runtime-…`). An image of that name is replaced.
    pub name: String,
    /// `oci` (default): an OCI image layout or a `docker save` archive, as a tar; its
    /// entrypoint, cmd, env and working dir run at every boot. `rootfs-tar`: a tar of a
    /// root filesystem. `ext4`: a root filesystem image. `kernel` (a bzImage or vmlinux)
    /// or `initrd` (an initramfs that starts `hearth-guest` as init): the image boots it
    /// with the default image's other part.
    pub format: Option<String>,
    /// The body's SHA-256 (hex); the upload is refused when it differs.
    pub sha256: Option<String>,
}

/// Checks the name of an image a user adds (imported or built): a name [`check_name`]
/// takes, and not a built-in image's (`default`, `runtime-…`).
pub fn check_user_image_name(name: &str) -> Result<(), String> {
    check_name("image", name)?;
    if name == "default" || name.starts_with("runtime-") {
        return Err(format!("{name:?} is a built-in image's name; pick another"));
    }
    Ok(())
}

/// Checks a name of `what` (a VM, a function): 1–63 lowercase letters, digits and dashes,
/// not starting or ending with a dash (a VM's name becomes the guest's hostname).
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name {name:?}: use 1–63 lowercase letters, digits and dashes, \
             not starting or ending with a dash"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::VmState::*;

    #[test]
    fn legal_and_illegal_transitions() {
        assert!(Creating.can_become(Starting));
        assert!(Running.can_become(Paused));
        assert!(Paused.can_become(Running));
        assert!(Stopped.can_become(Starting));
        assert!(Running.can_become(Failed));
        assert!(Stopped.can_become(Deleting));
        assert!(!Stopped.can_become(Paused));
        assert!(!Running.can_become(Starting));
        assert!(!Deleting.can_become(Running));
        assert!(!Deleting.can_become(Failed));
    }

    #[test]
    fn names_are_hostnames() {
        assert!(super::check_name("VM", "web-1").is_ok());
        for bad in ["", "-a", "a-", "Web", "a_b", &"x".repeat(64)] {
            assert!(super::check_name("VM", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn states_round_trip_through_strings() {
        for s in [
            Creating, Starting, Running, Paused, Stopping, Stopped, Failed, Deleting,
        ] {
            assert_eq!(s.as_str().parse::<super::VmState>().unwrap(), s);
        }
    }
}
