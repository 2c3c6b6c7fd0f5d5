//! VMM drivers and what a host can run.
//!
//! [`discover`] finds the VMM binaries on a host and says, for each, whether it is usable and
//! why not. Each driver implements [`Hypervisor`]: it turns a [`VmConfig`] into a running VMM
//! process and hands back a [`Launched`] — the process's exit as a future and a
//! [`VmControl`] to reach the guest channel, ask for an ACPI power-off or kill it. The agent
//! never builds a command line or speaks a VMM's API itself.

pub(crate) mod api_vmm;
pub mod cloud_hypervisor;
pub mod discover;
pub mod firecracker;
pub mod hybrid_vsock;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod snapshot;
pub mod uds_api;
pub mod vmlinux;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

pub use discover::{discover_vmms, VmmKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What to boot. The run dir holds everything of this VM's run: sockets, serial log, pid
/// file, disks.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// A root filesystem (ext4) the guest switches to, attached read-only; many VMs share
    /// one. None: the guest stays in its initramfs.
    pub rootfs: Option<PathBuf>,
    /// The VM's own writable disk (a raw ext4 file): the guest keeps its root filesystem's
    /// changes there. None: changes live in guest memory.
    pub disk: Option<PathBuf>,
    /// Restore the memory and device state saved in this directory ([`VmControl::save`])
    /// instead of booting.
    pub incoming: Option<PathBuf>,
    /// Volumes (raw ext4 files), attached in order; the guest mounts each at
    /// `/volumes/<name>`.
    pub volumes: Vec<VolumeDisk>,
    /// A NIC on QEMU user-mode networking, with its port forwards.
    pub user_net: Option<UserNet>,
    /// A NIC on a TAP device the agent made (a managed network). Neither: no NIC.
    pub tap: Option<TapNet>,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub accel: Accel,
    pub hostname: String,
    pub run_dir: PathBuf,
}

/// User-mode networking: the guest is 10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNet {
    pub mac: String,
    /// (protocol, host port on 127.0.0.1, guest port).
    pub forwards: Vec<(String, u16, u16)>,
}

/// A NIC on a TAP device, and the static address the guest configures on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapNet {
    /// The TAP device's name.
    pub ifname: String,
    /// The network namespace the TAP lives in (`/run/netns/NAME`); the VMM is started in
    /// it. None: the agent's own.
    pub netns: Option<PathBuf>,
    pub mac: String,
    /// The guest's address with its prefix, e.g. `10.88.0.2/16`.
    pub address: String,
    /// Its default route; none on an isolated network.
    pub gateway: Option<String>,
    pub dns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDisk {
    pub name: String,
    pub path: PathBuf,
}

/// One of a VM's disks, as every driver attaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive<'a> {
    /// Its id, and its serial number where the VMM gives one: `rootfs`, `disk`, `vol0`, ….
    pub id: String,
    pub path: &'a Path,
    pub read_only: bool,
}

impl VmConfig {
    pub fn serial_log(&self) -> PathBuf {
        self.run_dir.join("serial.log")
    }

    /// The network namespace the VM's TAP lives in, which its VMM must run in (a TAP is
    /// opened by name in the opener's own namespace).
    pub fn tap_netns(&self) -> Option<&Path> {
        self.tap.as_ref().and_then(|t| t.netns.as_deref())
    }

    /// The VM's disks, in the order they are attached: the shared root filesystem
    /// (read-only), the VM's own disk, its volumes.
    pub fn drives(&self) -> Vec<Drive<'_>> {
        let mut drives = Vec::new();
        if let Some(r) = &self.rootfs {
            drives.push(Drive {
                id: "rootfs".into(),
                path: r,
                read_only: true,
            });
        }
        if let Some(d) = &self.disk {
            drives.push(Drive {
                id: "disk".into(),
                path: d,
                read_only: false,
            });
        }
        drives.extend(self.volumes.iter().enumerate().map(|(i, v)| Drive {
            id: format!("vol{i}"),
            path: &v.path,
            read_only: false,
        }));
        drives
    }
}

/// A byte stream to the guest agent.
pub trait GuestIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> GuestIo for T {}

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("starting {vmm}: {source}")]
    Spawn {
        vmm: &'static str,
        source: std::io::Error,
    },
    #[error("{vmm} exited at start ({status}): {stderr}")]
    EarlyExit {
        vmm: &'static str,
        status: String,
        stderr: String,
    },
    #[error("{vmm} did not create its sockets within {secs} s")]
    StartTimeout { vmm: &'static str, secs: u64 },
    #[error(transparent)]
    Qmp(#[from] qmp::QmpError),
    #[error("{0}")]
    Snapshot(String),
    /// The VMM refused a change to a running VM.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A VMM process that has started.
pub struct Launched {
    pub pid: u32,
    /// Resolves with a description of how the process ended ("exit status: 0", "signal: 9").
    pub exit: oneshot::Receiver<String>,
    pub control: std::sync::Arc<dyn VmControl>,
}

/// A VMM found running by [`Hypervisor::adopt`]. It is not the agent's child: how it ends
/// is known, but not its exit status.
pub struct Adopted {
    pub launched: Launched,
    /// Its vCPUs are stopped (the VM was paused).
    pub paused: bool,
}

/// What [`Launched::exit`] says when an adopted VMM ends.
pub const ADOPTED_EXIT: &str = "exited (adopted after an agent restart: its status is unknown)";

/// A driver: knows how to start one kind of VMM.
#[async_trait]
pub trait Hypervisor: Send + Sync {
    fn kind(&self) -> VmmKind;
    /// The VMM's version line (recorded in snapshots, which only load into the same).
    async fn version(&self) -> String;
    /// Starts the VMM. With `config.incoming`, the VM's state is loaded from that dir and
    /// the VM runs on from where it was saved; this returns once it does.
    async fn launch(&self, config: &VmConfig) -> Result<Launched, VmmError>;
    /// Takes over the VMM a previous run of this agent started in `run_dir` and left
    /// running (the agent was restarted, or killed): `Ok(None)` when none runs there.
    async fn adopt(&self, run_dir: &Path) -> Result<Option<Adopted>, VmmError>;
    /// What a snapshot of a VM launched from `config` depends on.
    fn profile(&self, config: &VmConfig, version: &str) -> snapshot::Profile;
}

/// What can be done to a running VMM besides waiting for it.
#[async_trait]
pub trait VmControl: Send + Sync {
    /// A new connection to the guest agent's channel.
    async fn guest_stream(&self) -> Result<Box<dyn GuestIo>, VmmError>;
    /// Asks the guest to power off as if its power button was pressed.
    async fn power_off(&self) -> Result<(), VmmError>;
    /// Freezes the guest's vCPUs (its memory and devices stay as they are).
    async fn pause(&self) -> Result<(), VmmError>;
    /// Lets a paused guest run again.
    async fn resume(&self) -> Result<(), VmmError>;
    /// Writes the paused VM's memory and device state into the directory `dir`, as files of
    /// the driver's own naming (none is `disk.ext4` or `meta.json`). The VM stays paused.
    async fn save(&self, dir: &Path) -> Result<(), VmmError>;
    /// Adds (or with `add` false, removes) a forward from `127.0.0.1:host_port` to the
    /// guest's `guest_port` on its user-mode NIC.
    async fn user_forward(
        &self,
        add: bool,
        protocol: &str,
        host_port: u16,
        guest_port: u16,
    ) -> Result<(), VmmError>;
    /// Kills the VMM. The exit future resolves soon after.
    fn kill(&self);
}

/// Kills the VMM (of any driver) a previous agent run left in `run_dir`, if one runs there,
/// and returns its PID. Only a PID from the run dir's own pid file, checked to be that
/// run dir's VMM, is signalled, through a pidfd (never a reused PID).
pub fn kill_leftover(run_dir: &Path) -> Option<i32> {
    let qemu_pid = qemu::RunDir(run_dir).pid_file();
    let (pid, pidfd) =
        process::find(&qemu_pid, |pid| qemu::runs_in(pid, run_dir)).or_else(|| {
            let info = api_vmm::RunInfo::read(run_dir)?;
            process::find(&api_vmm::RunDir(run_dir).pid_file(), |pid| info.is_vmm(pid))
        })?;
    pidfd.kill();
    Some(pid)
}
