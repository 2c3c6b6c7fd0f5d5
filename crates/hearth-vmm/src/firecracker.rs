//! Firecracker, as API calls: what configures and starts a VM, pauses and resumes it, saves
//! and loads its snapshot. The calls are data ([`ApiCall`]), built here from a [`VmConfig`]
//! and checked in tests against Firecracker's own API specification; [`crate::uds_api`]
//! sends them.
//!
//! What Firecracker needs that QEMU does not:
//! - an uncompressed kernel (`vmlinux`), which the caller extracts from the bzImage;
//! - raw disks (the agent's disks are raw ext4 files already);
//! - a TAP for networking: it has no user-mode networking;
//! - the guest channel over its hybrid vsock ([`crate::hybrid_vsock`]) on
//!   [`GUEST_VSOCK_PORT`];
//! - 1 or an even number of vCPUs, at most 32.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::uds_api::ApiCall;
use crate::{qemu, VmConfig, VmmError};

/// The vsock port the guest agent listens on.
pub const GUEST_VSOCK_PORT: u32 = 1024;
/// The guest's vsock context id (each VM has its own vsock socket, so they may all be 3).
pub const GUEST_CID: u32 = 3;
const MAX_VCPUS: u32 = 32;

/// Where a Firecracker VM keeps its sockets and snapshot files, in its run dir.
pub struct Paths<'a>(pub &'a Path);

impl Paths<'_> {
    pub fn api_socket(&self) -> PathBuf {
        self.0.join("firecracker.sock")
    }
    pub fn vsock_socket(&self) -> PathBuf {
        self.0.join("vsock.sock")
    }
}

/// Whether Firecracker can run `config`, and if not, why.
pub fn check(config: &VmConfig) -> Result<(), VmmError> {
    let refuse = |m: String| Err(VmmError::Refused(m));
    if config.user_net.is_some() {
        return refuse(
            "Firecracker has no user-mode networking: put the VM on a managed network (a TAP), \
             or use --vmm qemu"
                .into(),
        );
    }
    if config.vcpus == 0 || config.vcpus > MAX_VCPUS || (config.vcpus > 1 && config.vcpus % 2 == 1)
    {
        return refuse(format!(
            "Firecracker runs 1 or an even number of vCPUs up to {MAX_VCPUS}, not {}",
            config.vcpus
        ));
    }
    Ok(())
}

/// The kernel command line of a guest whose channel is the vsock: QEMU's, without the TSC
/// hint (these VMMs run on KVM only). Cloud Hypervisor's too.
pub(crate) fn vsock_cmdline(config: &VmConfig) -> String {
    let mut c = config.clone();
    c.accel = crate::Accel::Kvm;
    format!(
        "{} hearth.channel=vsock:{GUEST_VSOCK_PORT}",
        qemu::append(&c)
    )
}

/// Firecracker's kernel command line: [`vsock_cmdline`] with its reboot and PCI settings.
pub fn boot_args(config: &VmConfig) -> String {
    format!("{} reboot=k pci=off", vsock_cmdline(config))
}

/// The calls that configure the VM and start it, in order. `vmlinux` is the uncompressed
/// kernel.
pub fn boot_calls(config: &VmConfig, vmlinux: &Path) -> Result<Vec<ApiCall>, VmmError> {
    check(config)?;
    let p = |p: &Path| p.display().to_string();
    let mut calls = vec![
        ApiCall::put(
            "/boot-source",
            json!({
                "kernel_image_path": p(vmlinux),
                "initrd_path": p(&config.initrd),
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
        json!({"guest_cid": GUEST_CID, "uds_path": p(&Paths(&config.run_dir).vsock_socket())}),
    ));
    calls.push(ApiCall::put("/entropy", json!({})));
    calls.push(action("InstanceStart"));
    Ok(calls)
}

/// The block devices, named as the guest looks for them (as QEMU's serial numbers are).
fn drive_calls(config: &VmConfig) -> Vec<ApiCall> {
    let mut drives: Vec<(String, &Path, bool)> = Vec::new();
    if let Some(r) = &config.rootfs {
        drives.push(("rootfs".into(), r, true));
    }
    if let Some(d) = &config.disk {
        drives.push(("disk".into(), d, false));
    }
    for (i, v) in config.volumes.iter().enumerate() {
        drives.push((format!("vol{i}"), &v.path, false));
    }
    drives
        .into_iter()
        .map(|(id, path, ro)| {
            ApiCall::put(
                format!("/drives/{id}"),
                json!({
                    "drive_id": id,
                    "path_on_host": path.display().to_string(),
                    "is_root_device": false,
                    "is_read_only": ro,
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

/// Saves the paused VM: its device state to `state`, its memory to `memory`.
pub fn snapshot_call(state: &Path, memory: &Path) -> ApiCall {
    ApiCall::put(
        "/snapshot/create",
        json!({
            "snapshot_type": "Full",
            "snapshot_path": state.display().to_string(),
            "mem_file_path": memory.display().to_string(),
        }),
    )
}

/// Loads a snapshot into a fresh Firecracker and resumes it, on this run's TAP and vsock
/// socket (a clone has its own).
pub fn load_call(config: &VmConfig, state: &Path, memory: &Path) -> ApiCall {
    let mut body = json!({
        "snapshot_path": state.display().to_string(),
        "mem_backend": {"backend_type": "File", "backend_path": memory.display().to_string()},
        "resume_vm": true,
        "vsock_override": {"uds_path": Paths(&config.run_dir).vsock_socket().display().to_string()},
    });
    if let Some(t) = &config.tap {
        body["network_overrides"] = json!([{"iface_id": "eth0", "host_dev_name": t.ifname}]);
    }
    ApiCall::put("/snapshot/load", body)
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
        let calls = boot_calls(&config(), Path::new("/k/vmlinux")).unwrap();
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
    }

    #[test]
    fn what_firecracker_cannot_run_is_refused_with_the_reason() {
        let mut c = config();
        c.tap = None;
        c.user_net = Some(UserNet {
            mac: "02:00:00:00:00:02".into(),
            forwards: vec![],
        });
        let err = boot_calls(&c, Path::new("/k/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("user-mode"), "{err}");
        let mut c = config();
        c.vcpus = 3;
        let err = boot_calls(&c, Path::new("/k/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("even"), "{err}");
    }
}
