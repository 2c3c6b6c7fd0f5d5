//! What the Firecracker and Cloud Hypervisor drivers share. Both are configured over a
//! REST API on a Unix socket ([`crate::uds_api`]), carry the guest channel over a hybrid
//! vsock ([`crate::hybrid_vsock`]) and have no user-mode networking.
//!
//! Each runs with its VM's *root* as working directory (the run dir; for a jailed
//! Firecracker, its chroot), where every file it opens is linked under a fixed relative
//! name: `vmlinux`, `initrd`, `rootfs.img`, `disk.img`, `vol0.img`…, `vsock.sock`. A saved
//! state therefore names no path of the VM that saved it and loads into any other VM's
//! root — a clone gets its own disk and socket by the same names.
//!
//! The run dir also holds `vmm.json` ([`RunInfo`]: where the root is, which TAP the VM
//! uses), `vmm.pid`, `vmm.stderr` and `serial.log`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::firecracker::GUEST_VSOCK_PORT;
use crate::snapshot::Profile;
use crate::uds_api::{ApiCall, UdsApi};
use crate::{
    hybrid_vsock, process, Adopted, GuestIo, Launched, VmConfig, VmControl, VmmError, VmmKind,
};

/// How long the VMM gets to create its API socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the guest agent gets to answer a vsock `CONNECT`.
const VSOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The names the VMM sees, relative to its root.
pub(crate) const KERNEL: &str = "vmlinux";
pub(crate) const INITRD: &str = "initrd";
pub(crate) const VSOCK: &str = "vsock.sock";
pub(crate) const API_SOCKET: &str = "api.sock";
pub(crate) const SERIAL: &str = "serial.log";

/// A disk's file name in the root: `rootfs.img`, `disk.img`, `vol0.img`….
pub(crate) fn drive_file(id: &str) -> String {
    format!("{id}.img")
}

/// The files of a VM's run dir that are the driver's, not the VMM's.
pub(crate) struct RunDir<'a>(pub &'a Path);

impl RunDir<'_> {
    pub fn pid_file(&self) -> PathBuf {
        self.0.join("vmm.pid")
    }
    pub fn stderr_log(&self) -> PathBuf {
        self.0.join("vmm.stderr")
    }
    fn info(&self) -> PathBuf {
        self.0.join("vmm.json")
    }
}

/// What a restarted agent needs to take the VMM over, and a save needs to know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunInfo {
    pub root: PathBuf,
    /// The TAP the VM runs on (a snapshot's loader renames it for a clone).
    pub tap: Option<String>,
    /// The id a jailed Firecracker was started with (the jailer passes it as `--id=ID`).
    #[serde(default)]
    pub jail_id: Option<String>,
}

impl RunInfo {
    /// The run of `config`'s VM in `root`.
    pub fn new(root: PathBuf, config: &VmConfig, jail_id: Option<String>) -> RunInfo {
        RunInfo {
            root,
            tap: config.tap.as_ref().map(|t| t.ifname.clone()),
            jail_id,
        }
    }

    /// Whether process `pid` is this VM's VMM: a jailed Firecracker by its `--id` (its
    /// working directory is in a mount namespace of its own), any other by working in the
    /// root.
    pub fn is_vmm(&self, pid: i32) -> bool {
        match &self.jail_id {
            Some(id) => process::has_arg(pid, &format!("--id={id}")),
            None => process::works_in(pid, &self.root),
        }
    }

    pub fn write(&self, run_dir: &Path) -> Result<(), VmmError> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        std::fs::write(RunDir(run_dir).info(), bytes)?;
        Ok(())
    }

    pub fn read(run_dir: &Path) -> Option<RunInfo> {
        serde_json::from_slice(&std::fs::read(RunDir(run_dir).info()).ok()?).ok()
    }
}

/// How the files of a VM get into its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// Symbolic links to where the files are (the VMM sees the whole file system).
    Symbolic,
    /// Hard links (a chroot cannot follow a symbolic link out of it): the files must be
    /// on the root's file system.
    Hard,
}

/// Links each `(name, file)` into `root` under its name, replacing what was there.
pub(crate) fn stage(root: &Path, files: &[(String, PathBuf)], link: Link) -> Result<(), VmmError> {
    std::fs::create_dir_all(root)?;
    for (name, file) in files {
        let at = root.join(name);
        let _ = std::fs::remove_file(&at);
        let linked = match link {
            Link::Symbolic => std::os::unix::fs::symlink(file, &at),
            Link::Hard => std::fs::hard_link(file, &at),
        };
        linked.map_err(|e| {
            let hint = if link == Link::Hard && e.raw_os_error() == Some(libc::EXDEV) {
                ": the jailer needs the images and VM files on the same file system as the \
                 agent's data dir"
            } else {
                ""
            };
            VmmError::Io(std::io::Error::new(
                e.kind(),
                format!(
                    "linking {} into {}: {e}{hint}",
                    file.display(),
                    root.display()
                ),
            ))
        })?;
    }
    Ok(())
}

/// The files a VM launched from `config` opens, by their names in its root (`kernel` is
/// the ELF kernel to boot).
pub(crate) fn vm_files(config: &VmConfig, kernel: &Path) -> Vec<(String, PathBuf)> {
    let mut files = vec![
        (KERNEL.to_string(), kernel.to_path_buf()),
        (INITRD.to_string(), config.initrd.clone()),
    ];
    let drives = config.drives().into_iter();
    files.extend(drives.map(|d| (drive_file(&d.id), d.path.to_path_buf())));
    files
}

/// A snapshot's profile for these VMMs (KVM only, the host's CPU model).
pub(crate) fn profile(kind: VmmKind, config: &VmConfig, version: &str) -> Profile {
    let p = |p: &Path| p.display().to_string();
    let mut devices: Vec<String> = config.drives().into_iter().map(|d| d.id).collect();
    if config.tap.is_some() {
        devices.push("net:tap".into());
    }
    devices.extend(["vsock".to_string(), "rng".to_string()]);
    Profile {
        vmm: kind.name().into(),
        vmm_version: version.into(),
        machine: kind.name().into(),
        accel: crate::Accel::Kvm.name().into(),
        cpu_model: "host".into(),
        vcpus: config.vcpus,
        memory_mib: config.memory_mib,
        kernel: p(&config.kernel),
        initrd: p(&config.initrd),
        rootfs: config.rootfs.as_deref().map(p),
        devices,
    }
}

/// The VMM's API and how its calls differ.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Api {
    Firecracker,
    CloudHypervisor,
}

impl Api {
    fn kind(self) -> VmmKind {
        match self {
            Api::Firecracker => VmmKind::Firecracker,
            Api::CloudHypervisor => VmmKind::CloudHypervisor,
        }
    }

    /// Whether the VM is paused, from the VMM's own report.
    async fn paused(self, api: &UdsApi) -> Result<bool, VmmError> {
        let call = match self {
            Api::Firecracker => ApiCall::get("/"),
            Api::CloudHypervisor => ApiCall::get("/api/v1/vm.info"),
        };
        let info: serde_json::Value =
            serde_json::from_str(&api.send(&call).await.map_err(refused)?)
                .map_err(|e| VmmError::Refused(format!("the VMM's state is unreadable: {e}")))?;
        Ok(info.get("state").and_then(|s| s.as_str()) == Some("Paused"))
    }
}

pub(crate) fn refused(e: crate::uds_api::ApiError) -> VmmError {
    VmmError::Refused(e.to_string())
}

/// The running VMM, reached through its root.
pub(crate) struct ApiControl {
    api: Api,
    info: RunInfo,
    kill: mpsc::Sender<()>,
}

impl ApiControl {
    fn client(&self) -> UdsApi {
        UdsApi::new(self.info.root.join(API_SOCKET))
    }

    async fn send(&self, call: ApiCall) -> Result<(), VmmError> {
        self.client().send(&call).await.map_err(refused)?;
        Ok(())
    }
}

/// The [`Launched`] of a VMM whose process is `owned`.
fn launched(api: Api, info: RunInfo, owned: process::Owned) -> Launched {
    Launched {
        pid: owned.pid,
        exit: owned.exit,
        control: Arc::new(ApiControl {
            api,
            info,
            kill: owned.kill,
        }),
    }
}

/// Takes over the VMM a previous agent run left in `run_dir`.
pub(crate) async fn adopt(api: Api, run_dir: &Path) -> Result<Option<Adopted>, VmmError> {
    let Some(info) = RunInfo::read(run_dir) else {
        return Ok(None);
    };
    let Some((pid, pidfd)) = process::find(&RunDir(run_dir).pid_file(), |pid| info.is_vmm(pid))
    else {
        return Ok(None);
    };
    let paused = api.paused(&UdsApi::new(info.root.join(API_SOCKET))).await?;
    let owned = process::watch_adopted(pid, pidfd)?;
    Ok(Some(Adopted {
        launched: launched(api, info, owned),
        paused,
    }))
}

#[async_trait]
impl VmControl for ApiControl {
    async fn guest_stream(&self) -> Result<Box<dyn GuestIo>, VmmError> {
        let s = hybrid_vsock::connect(&self.info.root.join(VSOCK), GUEST_VSOCK_PORT, VSOCK_TIMEOUT)
            .await
            .map_err(|e| VmmError::Io(std::io::Error::other(e)))?;
        Ok(Box::new(s))
    }

    async fn power_off(&self) -> Result<(), VmmError> {
        self.send(match self.api {
            Api::Firecracker => crate::firecracker::power_off_call(),
            Api::CloudHypervisor => crate::cloud_hypervisor::power_off_call(),
        })
        .await
    }

    async fn pause(&self) -> Result<(), VmmError> {
        self.send(match self.api {
            Api::Firecracker => crate::firecracker::pause_call(),
            Api::CloudHypervisor => crate::cloud_hypervisor::pause_call(),
        })
        .await
    }

    async fn resume(&self) -> Result<(), VmmError> {
        self.send(match self.api {
            Api::Firecracker => crate::firecracker::resume_call(),
            Api::CloudHypervisor => crate::cloud_hypervisor::resume_call(),
        })
        .await
    }

    async fn save(&self, dir: &Path) -> Result<(), VmmError> {
        match self.api {
            Api::Firecracker => crate::firecracker::save(&self.client(), &self.info, dir).await,
            Api::CloudHypervisor => self.send(crate::cloud_hypervisor::snapshot_call(dir)).await,
        }
    }

    async fn user_forward(&self, _: bool, _: &str, _: u16, _: u16) -> Result<(), VmmError> {
        Err(VmmError::Refused(format!(
            "{} has no user-mode networking: forward ports on a managed network",
            self.api.kind().name()
        )))
    }

    fn kill(&self) {
        let _ = self.kill.try_send(());
    }
}

/// The ELF kernel for `config` (extracted into `cache_dir` off the async runtime).
pub(crate) async fn vmlinux(
    api: Api,
    config: &VmConfig,
    cache_dir: &Path,
) -> Result<PathBuf, VmmError> {
    let (kernel, cache) = (config.kernel.clone(), cache_dir.to_path_buf());
    tokio::task::spawn_blocking(move || crate::vmlinux::cached(&kernel, &cache))
        .await
        .map_err(|e| VmmError::Io(std::io::Error::other(e)))?
        .map_err(|e| VmmError::Refused(format!("{} needs a vmlinux: {e}", api.kind().name())))
}

/// Starts the VMM `cmd` (prepared to serve its API on `info.root`'s [`API_SOCKET`]),
/// records it for a restarted agent, waits for its socket and sends it `calls`. What it
/// refuses ends the process and fails the launch with its words.
pub(crate) async fn start(
    api: Api,
    mut cmd: tokio::process::Command,
    config: &VmConfig,
    info: RunInfo,
    calls: &[ApiCall],
    on_exit: Option<process::OnExit>,
) -> Result<Launched, VmmError> {
    let rd = RunDir(&config.run_dir);
    let api_socket = info.root.join(API_SOCKET);
    for f in [&api_socket, &rd.pid_file()] {
        let _ = std::fs::remove_file(f);
    }
    info.write(&config.run_dir)?;
    let vmm = api.kind().name();
    let mut child = cmd
        .spawn()
        .map_err(|source| VmmError::Spawn { vmm, source })?;
    std::fs::write(rd.pid_file(), child.id().unwrap_or(0).to_string())?;
    // Bound is not yet listening: ready once a connection is taken (a Unix socket answers
    // a connect at once, so this blocks for no time).
    let ready = || std::os::unix::net::UnixStream::connect(&api_socket).is_ok();
    process::wait_ready(vmm, &mut child, &rd.stderr_log(), START_TIMEOUT, ready).await?;
    if let Err(e) = UdsApi::new(&api_socket).send_all(calls).await {
        process::discard(child).await;
        return Err(refused(e));
    }
    Ok(launched(api, info, process::own(child, on_exit)))
}

/// Moves `from` to `to`, copying when they are on different file systems.
pub(crate) fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            std::fs::copy(from, to)?;
            std::fs::remove_file(from)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vms_files_are_linked_under_fixed_names() {
        let c = crate::firecracker::tests::config();
        let files = vm_files(&c, Path::new("/k/vmlinux"));
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["vmlinux", "initrd", "rootfs.img", "disk.img", "vol0.img"]
        );
        assert_eq!(files[4].1, Path::new("/vol/data.ext4"));

        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.ext4");
        std::fs::write(&src, b"disk").unwrap();
        let root = dir.path().join("root");
        let files = [("disk.img".to_string(), src.clone())];
        stage(&root, &files, Link::Symbolic).unwrap();
        stage(&root, &files, Link::Symbolic).unwrap(); // again: replaces
        assert_eq!(std::fs::read_link(root.join("disk.img")).unwrap(), src);
        stage(&root, &files, Link::Hard).unwrap();
        std::fs::write(root.join("disk.img"), b"written").unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), b"written", "the same file");
        let missing = [("x.img".to_string(), dir.path().join("none"))];
        let err = stage(&root, &missing, Link::Hard).unwrap_err();
        assert!(err.to_string().contains("none"), "{err}");
    }

    /// A jailed Firecracker is known by the `--id=` the jailer gives it, any other VMM by
    /// working in its root.
    #[tokio::test]
    async fn a_vmm_is_recognised_by_its_root_or_its_jail_id() {
        let dir = tempfile::tempdir().unwrap();
        // Its own process group, killed whole: the shell's `sleep` goes with it.
        let child = tokio::process::Command::new("sh")
            .args(["-c", "sleep 30; true", "--id=vm1"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap() as i32;
        let owned = process::own(child, None);
        // Until the exec, the command line is the test's.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !process::has_arg(pid, "-c") && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut info = RunInfo {
            root: dir.path().into(),
            tap: None,
            jail_id: None,
        };
        assert!(info.is_vmm(pid));
        info.root = "/".into();
        assert!(!info.is_vmm(pid));
        info.jail_id = Some("vm1".into());
        assert!(info.is_vmm(pid));
        info.jail_id = Some("vm2".into());
        assert!(!info.is_vmm(pid));
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        tokio::time::timeout(Duration::from_secs(10), owned.exit)
            .await
            .unwrap()
            .unwrap();
    }
}
