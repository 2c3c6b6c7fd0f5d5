//! The Firecracker driver. The calls that configure, start, pause, save and load a VM are
//! data ([`ApiCall`]), built here from a [`VmConfig`] and checked in tests against
//! Firecracker's own API specification; [`crate::uds_api`] sends them, and
//! [`crate::api_vmm`] holds what this driver shares with Cloud Hypervisor's (the VM's root
//! and its file names, the running VMM's control).
//!
//! What Firecracker needs that QEMU does not:
//! - an uncompressed kernel (`vmlinux`), extracted from the bzImage ([`crate::vmlinux`]);
//! - raw disks (the agent's disks are raw ext4 files already), which the guest finds by
//!   their order (`/dev/vda`, …): Firecracker's drives have no serial number;
//! - a TAP for networking: it has no user-mode networking;
//! - the guest channel over its hybrid vsock ([`crate::hybrid_vsock`]) on
//!   [`GUEST_VSOCK_PORT`];
//! - 1 or an even number of vCPUs, at most 32;
//! - version 1.8 or later: the guest finds its virtio devices through ACPI (Debian's
//!   kernels cannot take them from the command line).
//!
//! When a jailer is configured ([`Jailer`]), each Firecracker runs through it: chrooted in
//! its VM's run dir, as an unprivileged user, in a cgroup v2 capped at the VM's vCPUs and
//! memory, and in the TAP's network namespace.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::json;

use crate::api_vmm::{self, Api, Link, RunDir, RunInfo, API_SOCKET, INITRD, KERNEL, VSOCK};
use crate::qemu::DiskNames;
use crate::snapshot::Profile;
use crate::uds_api::{ApiCall, UdsApi};
use crate::{process, Adopted, Hypervisor, Launched, VmConfig, VmmError, VmmKind};

/// The vsock port the guest agent listens on.
pub const GUEST_VSOCK_PORT: u32 = 1024;
/// The guest's vsock context id (each VM has its own vsock socket, so they may all be 3).
pub const GUEST_CID: u32 = 3;
/// A saved state's files, in its snapshot dir and (while saving or loading) in the root.
const STATE: &str = "vmstate.bin";
const MEMORY: &str = "memory.bin";
/// What else a save records: the TAP the VM ran on.
const NET: &str = "firecracker-net.json";
/// Firecracker's own log, in the root (its standard output is the guest's serial console).
const LOG: &str = "vmm.log";
/// Memory the Firecracker process may use beyond the guest's, under the jailer's cgroup.
const OVERHEAD_MIB: u64 = 128;

/// Whether Firecracker can run `config`, and if not, why.
pub fn check(config: &VmConfig) -> Result<(), VmmError> {
    let fc = VmmKind::Firecracker.name();
    hearth_types::vm::vmm_fits(fc, config.vcpus, config.user_net.is_some())
        .map_err(VmmError::Refused)
}

/// The kernel command line of a guest whose channel is the vsock: QEMU's, without the TSC
/// hint (these VMMs run on KVM only). Cloud Hypervisor's too.
pub(crate) fn vsock_cmdline(config: &VmConfig, disks: DiskNames) -> String {
    let mut c = config.clone();
    c.accel = crate::Accel::Kvm;
    format!(
        "{} hearth.channel=vsock:{GUEST_VSOCK_PORT}",
        crate::qemu::kernel_args(&c, disks)
    )
}

/// Firecracker's kernel command line: [`vsock_cmdline`] with its reboot and PCI settings.
pub fn boot_args(config: &VmConfig) -> String {
    format!(
        "{} reboot=k pci=off",
        vsock_cmdline(config, DiskNames::Order)
    )
}

/// The calls that configure the VM and start it, in order. Files are named as they are
/// in the VM's root ([`api_vmm::vm_files`]).
pub fn boot_calls(config: &VmConfig) -> Result<Vec<ApiCall>, VmmError> {
    check(config)?;
    let mut calls = vec![
        ApiCall::put(
            "/boot-source",
            json!({
                "kernel_image_path": KERNEL,
                "initrd_path": INITRD,
                "boot_args": boot_args(config),
            }),
        ),
        ApiCall::put(
            "/machine-config",
            json!({
                "vcpu_count": config.vcpus,
                "mem_size_mib": config.memory_mib,
                "smt": false,
            }),
        ),
    ];
    calls.extend(drive_calls(config));
    if let Some(t) = &config.tap {
        calls.push(ApiCall::put(
            "/network-interfaces/eth0",
            json!({"iface_id": "eth0", "host_dev_name": t.ifname, "guest_mac": t.mac}),
        ));
    }
    calls.push(ApiCall::put(
        "/vsock",
        json!({"guest_cid": GUEST_CID, "uds_path": VSOCK}),
    ));
    calls.push(ApiCall::put("/entropy", json!({})));
    calls.push(action("InstanceStart"));
    Ok(calls)
}

/// The block devices, in the order the guest numbers them (`vda`, `vdb`, …).
fn drive_calls(config: &VmConfig) -> Vec<ApiCall> {
    config
        .drives()
        .into_iter()
        .map(|d| {
            ApiCall::put(
                format!("/drives/{}", d.id),
                json!({
                    "drive_id": d.id,
                    "path_on_host": api_vmm::drive_file(&d.id),
                    "is_root_device": false,
                    "is_read_only": d.read_only,
                }),
            )
        })
        .collect()
}

fn action(kind: &str) -> ApiCall {
    ApiCall::put("/actions", json!({ "action_type": kind }))
}

/// Asks the guest to stop (Firecracker's stand-in for the power button).
pub fn power_off_call() -> ApiCall {
    action("SendCtrlAltDel")
}

pub fn pause_call() -> ApiCall {
    ApiCall::patch("/vm", json!({"state": "Paused"}))
}

pub fn resume_call() -> ApiCall {
    ApiCall::patch("/vm", json!({"state": "Resumed"}))
}

/// Saves the paused VM into its root: its device state to `vmstate.bin`, its memory to
/// `memory.bin`.
pub fn snapshot_call() -> ApiCall {
    ApiCall::put(
        "/snapshot/create",
        json!({"snapshot_type": "Full", "snapshot_path": STATE, "mem_file_path": MEMORY}),
    )
}

/// Loads the state staged in a fresh Firecracker's root and resumes it. A clone runs on a
/// TAP of its own: `saved_tap` is the one the snapshot's VM had, renamed when it differs
/// (which needs a Firecracker that knows `network_overrides`).
pub fn load_call(config: &VmConfig, saved_tap: Option<&str>) -> ApiCall {
    let mut body = json!({
        "snapshot_path": STATE,
        "mem_backend": {"backend_type": "File", "backend_path": MEMORY},
        "resume_vm": true,
    });
    if let (Some(t), Some(saved)) = (&config.tap, saved_tap) {
        if t.ifname != saved {
            body["network_overrides"] = json!([{"iface_id": "eth0", "host_dev_name": t.ifname}]);
        }
    }
    ApiCall::put("/snapshot/load", body)
}

/// Saves the paused VM into `dir` (see [`crate::VmControl::save`]).
pub(crate) async fn save(api: &UdsApi, info: &RunInfo, dir: &Path) -> Result<(), VmmError> {
    // Written in the root, where a jailed Firecracker can write, then moved.
    for f in [STATE, MEMORY] {
        let _ = std::fs::remove_file(info.root.join(f));
    }
    api.send(&snapshot_call()).await.map_err(api_vmm::refused)?;
    for f in [STATE, MEMORY] {
        api_vmm::move_file(&info.root.join(f), &dir.join(f))?;
    }
    let net = serde_json::to_vec(&json!({ "tap": info.tap })).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(NET), net)?;
    Ok(())
}

/// The TAP a snapshot's VM ran on.
fn saved_tap(dir: &Path) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(NET)).ok()?).ok()?;
    v["tap"].as_str().map(str::to_string)
}

/// Firecracker's jailer, and who the VMMs run as under it.
#[derive(Debug, Clone)]
pub struct Jailer {
    pub binary: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

impl Jailer {
    /// The chroot the jailer makes for the VM of `run_dir`:
    /// `<run dir>/jail/<Firecracker's file name>/<VM id>/root`.
    pub fn root(&self, firecracker: &Path, run_dir: &Path) -> PathBuf {
        run_dir
            .join("jail")
            .join(exec_name(firecracker))
            .join(vm_id(run_dir))
            .join("root")
    }

    /// The cgroup the jailer makes for the VM of `run_dir`:
    /// `<cgroup v2 mount>/<Firecracker's file name>/<VM id>`.
    pub fn cgroup(&self, firecracker: &Path, run_dir: &Path) -> Option<PathBuf> {
        let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
        let base = mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })?;
        Some(base.join(exec_name(firecracker)).join(vm_id(run_dir)))
    }

    /// The jailer's arguments: the chroot, the user, the cgroup v2 limits (the VM's vCPUs as
    /// a CPU quota, its memory plus Firecracker's own), the TAP's network namespace, and
    /// Firecracker's arguments after `--`.
    pub fn args(&self, firecracker: &Path, config: &VmConfig) -> Vec<String> {
        let mut a = vec![
            "--id".to_string(),
            vm_id(&config.run_dir),
            "--exec-file".into(),
            firecracker.display().to_string(),
            "--uid".into(),
            self.uid.to_string(),
            "--gid".into(),
            self.gid.to_string(),
            "--chroot-base-dir".into(),
            config.run_dir.join("jail").display().to_string(),
            "--cgroup-version".into(),
            "2".into(),
            "--cgroup".into(),
            format!("cpu.max={} 100000", u64::from(config.vcpus) * 100_000),
            "--cgroup".into(),
            format!("memory.max={}", (config.memory_mib + OVERHEAD_MIB) << 20),
        ];
        if let Some(ns) = config.tap_netns() {
            a.extend(["--netns".into(), ns.display().to_string()]);
        }
        a.extend(["--".into(), "--api-sock".into(), format!("/{API_SOCKET}")]);
        a.extend(["--log-path".into(), format!("/{LOG}")]);
        a
    }
}

/// Firecracker's file name, which the jailer names its chroot and cgroup after.
fn exec_name(firecracker: &Path) -> String {
    firecracker
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "firecracker".into())
}

/// The VM's id: its run dir's name.
fn vm_id(run_dir: &Path) -> String {
    run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The Firecracker driver.
pub struct Firecracker {
    pub binary: PathBuf,
    /// Used when set (the agent must then run as root).
    pub jailer: Option<Jailer>,
    /// Where kernels extracted from bzImages are kept.
    pub cache_dir: PathBuf,
}

impl Firecracker {
    /// The command that starts Firecracker for `config`, its root and how files get there.
    fn command(
        &self,
        config: &VmConfig,
    ) -> Result<(tokio::process::Command, PathBuf, Link), VmmError> {
        Ok(match &self.jailer {
            None => {
                let root = config.run_dir.clone();
                let mut cmd = tokio::process::Command::new(&self.binary);
                cmd.arg("--api-sock")
                    .arg(root.join(API_SOCKET))
                    .args(["--id", &vm_id(&config.run_dir)])
                    .arg("--log-path")
                    .arg(root.join(LOG))
                    .current_dir(&root);
                process::prepare(&mut cmd, config.tap_netns())?;
                (cmd, root, Link::Symbolic)
            }
            Some(j) => {
                let mut cmd = tokio::process::Command::new(&j.binary);
                cmd.args(j.args(&self.binary, config));
                process::prepare(&mut cmd, None)?;
                (cmd, j.root(&self.binary, &config.run_dir), Link::Hard)
            }
        })
    }

    /// Gives the jail's user the VM's writable files and `more`.
    fn chown_writable(&self, config: &VmConfig, more: &[PathBuf]) -> Result<(), VmmError> {
        if let Some(j) = &self.jailer {
            let drives = config.drives();
            let writable = drives.iter().filter(|d| !d.read_only).map(|d| d.path);
            for f in writable.chain(more.iter().map(PathBuf::as_path)) {
                std::os::unix::fs::chown(f, Some(j.uid), Some(j.gid))?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Hypervisor for Firecracker {
    fn kind(&self) -> VmmKind {
        VmmKind::Firecracker
    }

    async fn version(&self) -> String {
        crate::discover::cached_version_of(&self.binary).await
    }

    async fn launch(&self, config: &VmConfig) -> Result<Launched, VmmError> {
        check(config)?;
        let calls = match &config.incoming {
            Some(dir) => vec![load_call(config, saved_tap(dir).as_deref())],
            None => boot_calls(config)?,
        };
        std::fs::create_dir_all(&config.run_dir)?;
        let vmlinux = api_vmm::vmlinux(Api::Firecracker, config, &self.cache_dir).await?;
        let (mut cmd, root, link) = self.command(config)?;
        let mut files = api_vmm::vm_files(config, &vmlinux);
        if let Some(dir) = &config.incoming {
            files.extend([STATE, MEMORY].map(|f| (f.to_string(), dir.join(f))));
        }
        api_vmm::stage(&root, &files, link)?;
        // Firecracker appends to its log, which must exist.
        std::fs::File::create(root.join(LOG))?;
        self.chown_writable(config, &[root.join(LOG)])?;
        let jail_id = self.jailer.as_ref().map(|_| vm_id(&config.run_dir));
        let info = RunInfo::new(root, config, jail_id);
        // The jailer makes the VM's cgroup and leaves it: it goes when the VMM does (and a
        // stale one, from a run this agent did not see end, before the VMM starts).
        let cgroup = self
            .jailer
            .as_ref()
            .and_then(|j| j.cgroup(&self.binary, &config.run_dir));
        if let Some(dir) = &cgroup {
            let _ = std::fs::remove_dir(dir);
        }
        let on_exit = cgroup.map(|dir| -> process::OnExit {
            Box::new(move || {
                let _ = std::fs::remove_dir(dir);
            })
        });
        // Firecracker writes the guest's serial console to its standard output.
        cmd.stdout(std::fs::File::create(config.serial_log())?)
            .stderr(std::fs::File::create(RunDir(&config.run_dir).stderr_log())?);
        api_vmm::start(Api::Firecracker, cmd, config, info, &calls, on_exit).await
    }

    async fn adopt(&self, run_dir: &Path) -> Result<Option<Adopted>, VmmError> {
        api_vmm::adopt(Api::Firecracker, run_dir).await
    }

    fn profile(&self, config: &VmConfig, version: &str) -> Profile {
        api_vmm::profile(VmmKind::Firecracker, config, version)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{Accel, TapNet, UserNet, VolumeDisk};

    pub(crate) fn config() -> VmConfig {
        VmConfig {
            kernel: "/k/bzImage".into(),
            initrd: "/k/initrd".into(),
            rootfs: Some("/img/rootfs.ext4".into()),
            disk: Some("/run/vm1/disk.ext4".into()),
            incoming: None,
            volumes: vec![VolumeDisk {
                name: "data".into(),
                path: "/vol/data.ext4".into(),
            }],
            user_net: None,
            tap: Some(TapNet {
                ifname: "htap1".into(),
                netns: None,
                mac: "02:00:00:00:00:01".into(),
                address: "10.88.0.2/16".into(),
                gateway: Some("10.88.0.1".into()),
                dns: vec!["10.88.0.1".into()],
            }),
            vcpus: 2,
            memory_mib: 256,
            accel: Accel::Kvm,
            hostname: "vm1".into(),
            run_dir: "/run/vm1".into(),
        }
    }

    #[test]
    fn a_vm_is_configured_then_started() {
        let calls = boot_calls(&config()).unwrap();
        let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/boot-source",
                "/machine-config",
                "/drives/rootfs",
                "/drives/disk",
                "/drives/vol0",
                "/network-interfaces/eth0",
                "/vsock",
                "/entropy",
                "/actions"
            ]
        );
        let args = calls[0].body.as_ref().unwrap()["boot_args"]
            .as_str()
            .unwrap();
        assert!(args.contains("hearth.hostname=vm1") && args.contains("hearth.channel=vsock:1024"));
        assert!(!args.contains("tsc_early_khz"), "{args}");
        assert!(
            args.contains("hearth.rootfs=/dev/vda hearth.disk=/dev/vdb")
                && args.contains("hearth.volumes=data:/dev/vdc"),
            "Firecracker's drives are found by order: {args}"
        );
        let drive = calls[3].body.as_ref().unwrap();
        assert_eq!(drive["path_on_host"], "disk.img");
        assert_eq!(drive["is_read_only"], false);
    }

    #[test]
    fn what_firecracker_cannot_run_is_refused_with_the_reason() {
        let mut c = config();
        c.tap = None;
        c.user_net = Some(UserNet {
            mac: "02:00:00:00:00:02".into(),
            forwards: vec![],
        });
        let err = boot_calls(&c).unwrap_err();
        assert!(err.to_string().contains("user-mode"), "{err}");
        let mut c = config();
        c.vcpus = 3;
        let err = boot_calls(&c).unwrap_err();
        assert!(err.to_string().contains("even"), "{err}");
    }

    #[test]
    fn a_clone_renames_its_tap_only_when_it_differs() {
        let c = config();
        let same = load_call(&c, Some("htap1"));
        assert!(same
            .body
            .as_ref()
            .unwrap()
            .get("network_overrides")
            .is_none());
        let other = load_call(&c, Some("htap9"));
        assert_eq!(
            other.body.as_ref().unwrap()["network_overrides"][0]["host_dev_name"],
            "htap1"
        );
    }

    #[test]
    fn the_jailer_chroots_caps_and_enters_the_taps_namespace() {
        let j = Jailer {
            binary: "/usr/bin/jailer".into(),
            uid: 123,
            gid: 456,
        };
        let mut c = config();
        c.tap.as_mut().unwrap().netns = Some("/run/netns/hth".into());
        let fc = Path::new("/opt/fc/firecracker");
        let a = j.args(fc, &c).join(" ");
        assert!(
            a.starts_with("--id vm1 --exec-file /opt/fc/firecracker --uid 123 --gid 456"),
            "{a}"
        );
        assert!(a.contains("--chroot-base-dir /run/vm1/jail"));
        assert!(a.contains("--cgroup-version 2 --cgroup cpu.max=200000 100000"));
        assert!(a.contains(&format!("--cgroup memory.max={}", (256u64 + 128) << 20)));
        assert!(
            a.ends_with("--netns /run/netns/hth -- --api-sock /api.sock --log-path /vmm.log"),
            "{a}"
        );
        assert_eq!(
            j.root(fc, &c.run_dir),
            Path::new("/run/vm1/jail/firecracker/vm1/root")
        );
        if let Some(cg) = j.cgroup(fc, &c.run_dir) {
            assert!(cg.ends_with("firecracker/vm1"), "{}", cg.display());
        }
    }
}
