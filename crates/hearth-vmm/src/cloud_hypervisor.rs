//! The Cloud Hypervisor driver. Its API (`/api/v1/…` on its Unix socket) takes the whole VM
//! as one `vm.create` body, then `vm.boot`; pause, resume, snapshot (to a directory),
//! restore and shutdown are one call each. The calls are built here from a [`VmConfig`]
//! and checked in tests against Cloud Hypervisor's own API specification;
//! [`crate::uds_api`] sends them and [`crate::api_vmm`] holds what this driver shares with
//! Firecracker's.
//!
//! It boots the ELF kernel (PVH; extracted from the bzImage by [`crate::vmlinux`]), takes
//! raw disks (found by the guest by serial number, as with QEMU), needs a TAP for
//! networking (no user-mode networking) and carries the guest channel over its hybrid
//! vsock on [`crate::firecracker::GUEST_VSOCK_PORT`].
//!
//! A snapshot is the directory Cloud Hypervisor writes (`config.json`, `state.json`,
//! `memory-ranges`). Its `config.json` names the VM's files relative to the root, so it
//! loads into another VM's root as it is, except for the TAP's name: a restore loads a
//! copy of it with the TAP renamed.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::json;

use crate::api_vmm::{self, Api, Link, RunDir, RunInfo, API_SOCKET, INITRD, KERNEL, SERIAL, VSOCK};
use crate::firecracker::GUEST_CID;
use crate::qemu::DiskNames;
use crate::snapshot::Profile;
use crate::uds_api::ApiCall;
use crate::{process, Adopted, Hypervisor, Launched, VmConfig, VmmError, VmmKind};

const API: &str = "/api/v1";
/// The file of a snapshot that describes the VM.
const SAVED_CONFIG: &str = "config.json";
/// Where a restore's copy of the snapshot is put together, in the root.
const RESTORE_DIR: &str = "restore";

fn call(name: &str) -> String {
    format!("{API}/{name}")
}

/// The body of `vm.create`. Files are named as they are in the VM's root
/// ([`api_vmm::vm_files`]).
pub fn vm_config(config: &VmConfig) -> Result<serde_json::Value, VmmError> {
    let ch = VmmKind::CloudHypervisor.name();
    hearth_types::vm::vmm_fits(ch, config.vcpus, config.user_net.is_some())
        .map_err(VmmError::Refused)?;
    let cmdline = crate::firecracker::vsock_cmdline(config, DiskNames::Serial);
    let disks: Vec<serde_json::Value> = config
        .drives()
        .into_iter()
        .map(|d| {
            json!({
                "path": api_vmm::drive_file(&d.id),
                "readonly": d.read_only,
                "serial": d.id,
                "id": d.id,
            })
        })
        .collect();
    let mut body = json!({
        "payload": {"kernel": KERNEL, "initramfs": INITRD, "cmdline": cmdline},
        "cpus": {"boot_vcpus": config.vcpus, "max_vcpus": config.vcpus},
        "memory": {"size": config.memory_mib << 20},
        "disks": disks,
        "rng": {"src": "/dev/urandom"},
        "vsock": {"cid": GUEST_CID, "socket": VSOCK},
        "serial": {"mode": "File", "file": SERIAL},
        "console": {"mode": "Off"},
    });
    if let Some(t) = &config.tap {
        body["net"] = json!([{"tap": t.ifname, "mac": t.mac, "id": "eth0"}]);
    }
    Ok(body)
}

/// The calls that create the VM and boot it.
pub fn boot_calls(config: &VmConfig) -> Result<Vec<ApiCall>, VmmError> {
    Ok(vec![
        ApiCall::put(call("vm.create"), vm_config(config)?),
        ApiCall::put_empty(call("vm.boot")),
    ])
}

pub fn pause_call() -> ApiCall {
    ApiCall::put_empty(call("vm.pause"))
}

pub fn resume_call() -> ApiCall {
    ApiCall::put_empty(call("vm.resume"))
}

/// Asks the guest to stop, as the power button does.
pub fn power_off_call() -> ApiCall {
    ApiCall::put_empty(call("vm.power-button"))
}

/// Saves the paused VM into the directory `dir` (Cloud Hypervisor writes several files).
pub fn snapshot_call(dir: &Path) -> ApiCall {
    ApiCall::put(
        call("vm.snapshot"),
        json!({"destination_url": format!("file://{}", dir.display())}),
    )
}

/// Loads a snapshot saved by [`snapshot_call`] into a fresh Cloud Hypervisor, paused (a
/// [`resume_call`] lets it run: older versions know no `resume` field).
pub fn restore_call(dir: &Path) -> ApiCall {
    ApiCall::put(
        call("vm.restore"),
        json!({"source_url": format!("file://{}", dir.display())}),
    )
}

/// Stops the VMM itself (after which its process exits).
pub fn shutdown_vmm_call() -> ApiCall {
    ApiCall::put_empty(call("vmm.shutdown"))
}

/// Puts together, in `root`, the snapshot in `saved` as `config` restores it: the saved
/// `config.json` with the TAP renamed to this VM's, and links to the other files. Returns
/// the directory to restore from.
pub fn stage_restore(saved: &Path, root: &Path, config: &VmConfig) -> Result<PathBuf, VmmError> {
    let dir = root.join(RESTORE_DIR);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let bad = |e: String| VmmError::Snapshot(format!("the snapshot's {SAVED_CONFIG}: {e}"));
    let mut vm: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved.join(SAVED_CONFIG))?)
            .map_err(|e| bad(e.to_string()))?;
    if let (Some(nets), Some(t)) = (
        vm.get_mut("net").and_then(|n| n.as_array_mut()),
        &config.tap,
    ) {
        for n in nets {
            n["tap"] = json!(t.ifname);
        }
    }
    std::fs::write(
        dir.join(SAVED_CONFIG),
        serde_json::to_vec(&vm).map_err(|e| bad(e.to_string()))?,
    )?;
    for e in std::fs::read_dir(saved)?.flatten() {
        let name = e.file_name();
        let ours = ["disk.ext4", "meta.json", SAVED_CONFIG];
        if !ours.iter().any(|o| name == *o) {
            std::os::unix::fs::symlink(e.path(), dir.join(&name))?;
        }
    }
    Ok(dir)
}

/// The Cloud Hypervisor driver.
pub struct CloudHypervisor {
    pub binary: PathBuf,
    /// Where kernels extracted from bzImages are kept.
    pub cache_dir: PathBuf,
}

#[async_trait]
impl Hypervisor for CloudHypervisor {
    fn kind(&self) -> VmmKind {
        VmmKind::CloudHypervisor
    }

    async fn version(&self) -> String {
        crate::discover::cached_version_of(&self.binary).await
    }

    async fn launch(&self, config: &VmConfig) -> Result<Launched, VmmError> {
        let boot = boot_calls(config)?;
        let root = config.run_dir.clone();
        std::fs::create_dir_all(&root)?;
        let vmlinux = api_vmm::vmlinux(Api::CloudHypervisor, config, &self.cache_dir).await?;
        api_vmm::stage(&root, &api_vmm::vm_files(config, &vmlinux), Link::Symbolic)?;
        let calls = match &config.incoming {
            Some(saved) => vec![
                restore_call(&stage_restore(saved, &root, config)?),
                resume_call(),
            ],
            None => boot,
        };
        // Its log lines go to standard output and its errors to standard error: one file.
        let log = std::fs::File::create(RunDir(&config.run_dir).stderr_log())?;
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg("--api-socket")
            .arg(format!("path={}", root.join(API_SOCKET).display()))
            .current_dir(&root)
            .stdout(log.try_clone()?)
            .stderr(log);
        process::prepare(&mut cmd, config.tap_netns())?;
        let info = RunInfo::new(root, config, None);
        api_vmm::start(Api::CloudHypervisor, cmd, config, info, &calls, None).await
    }

    async fn adopt(&self, run_dir: &Path) -> Result<Option<Adopted>, VmmError> {
        api_vmm::adopt(Api::CloudHypervisor, run_dir).await
    }

    fn profile(&self, config: &VmConfig, version: &str) -> Profile {
        api_vmm::profile(VmmKind::CloudHypervisor, config, version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_vm_is_one_create_then_a_boot() {
        let c = crate::firecracker::tests::config();
        let calls = boot_calls(&c).unwrap();
        assert_eq!(calls[0].path, "/api/v1/vm.create");
        assert_eq!(calls[1].path, "/api/v1/vm.boot");
        let body = calls[0].body.as_ref().unwrap();
        assert_eq!(body["memory"]["size"], 256u64 << 20);
        let serials: Vec<&str> = body["disks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["serial"].as_str().unwrap())
            .collect();
        assert_eq!(serials, ["rootfs", "disk", "vol0"]);
        assert_eq!(body["net"][0]["tap"], "htap1");
        assert_eq!(body["disks"][1]["path"], "disk.img");
        assert_eq!(body["payload"]["kernel"], "vmlinux");
    }

    #[test]
    fn a_restore_renames_the_tap_and_links_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let saved = dir.path().join("snap");
        std::fs::create_dir_all(&saved).unwrap();
        let mut c = crate::firecracker::tests::config();
        let mut vm = vm_config(&c).unwrap();
        vm["net"][0]["tap"] = json!("htap-old");
        std::fs::write(saved.join("config.json"), vm.to_string()).unwrap();
        std::fs::write(saved.join("state.json"), "{}").unwrap();
        std::fs::write(saved.join("memory-ranges"), "mem").unwrap();
        std::fs::write(saved.join("disk.ext4"), "disk").unwrap();
        let root = dir.path().join("root");
        c.run_dir = root.clone();
        let got = stage_restore(&saved, &root, &c).unwrap();
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(got.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["net"][0]["tap"], "htap1");
        assert_eq!(cfg["disks"][0]["path"], "rootfs.img", "relative names stay");
        assert_eq!(std::fs::read(got.join("memory-ranges")).unwrap(), b"mem");
        assert!(!got.join("disk.ext4").exists());
        std::fs::write(saved.join("config.json"), "not json").unwrap();
        assert!(stage_restore(&saved, &root, &c).is_err());
    }
}
