//! Cloud Hypervisor, as API calls (`/api/v1/…` on its Unix socket): the whole VM is one
//! `vm.create` body, then `vm.boot`; pause, resume, snapshot (to a directory), restore and
//! shutdown are one call each. Built here from a [`VmConfig`] and checked in tests against
//! Cloud Hypervisor's own API specification; [`crate::uds_api`] sends them.
//!
//! It boots the bzImage directly, takes raw disks (found by the guest by serial number, as
//! with QEMU), needs a TAP for networking (no user-mode networking) and carries the guest
//! channel over its hybrid vsock on [`crate::firecracker::GUEST_VSOCK_PORT`].

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::firecracker::GUEST_CID;
use crate::uds_api::ApiCall;
use crate::{VmConfig, VmmError};

const API: &str = "/api/v1";

/// Where a Cloud Hypervisor VM keeps its sockets, in its run dir.
pub struct Paths<'a>(pub &'a Path);

impl Paths<'_> {
    pub fn api_socket(&self) -> PathBuf {
        self.0.join("cloud-hypervisor.sock")
    }
    pub fn vsock_socket(&self) -> PathBuf {
        self.0.join("vsock.sock")
    }
}

fn call(name: &str) -> String {
    format!("{API}/{name}")
}

/// The body of `vm.create`.
pub fn vm_config(config: &VmConfig) -> Result<serde_json::Value, VmmError> {
    if config.user_net.is_some() {
        return Err(VmmError::Refused(
            "Cloud Hypervisor has no user-mode networking: put the VM on a managed network (a \
             TAP), or use --vmm qemu"
                .into(),
        ));
    }
    let p = |p: &Path| p.display().to_string();
    let cmdline = crate::firecracker::vsock_cmdline(config);
    let mut disks = Vec::new();
    if let Some(r) = &config.rootfs {
        disks.push(json!({"path": p(r), "readonly": true, "serial": "rootfs", "id": "rootfs"}));
    }
    if let Some(d) = &config.disk {
        disks.push(json!({"path": p(d), "readonly": false, "serial": "disk", "id": "disk"}));
    }
    for (i, v) in config.volumes.iter().enumerate() {
        let id = format!("vol{i}");
        disks.push(json!({"path": p(&v.path), "readonly": false, "serial": id, "id": id}));
    }
    let mut body = json!({
        "payload": {
            "kernel": p(&config.kernel),
            "initramfs": p(&config.initrd),
            "cmdline": cmdline,
        },
        "cpus": {"boot_vcpus": config.vcpus, "max_vcpus": config.vcpus},
        "memory": {"size": config.memory_mib << 20},
        "disks": disks,
        "rng": {"src": "/dev/urandom"},
        "vsock": {"cid": GUEST_CID, "socket": p(&Paths(&config.run_dir).vsock_socket())},
        "serial": {"mode": "File", "file": p(&config.serial_log())},
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

/// Loads a snapshot saved by [`snapshot_call`] into a fresh Cloud Hypervisor, running.
pub fn restore_call(dir: &Path) -> ApiCall {
    ApiCall::put(
        call("vm.restore"),
        json!({"source_url": format!("file://{}", dir.display()), "resume": true}),
    )
}

/// Stops the VMM itself (after which its process exits).
pub fn shutdown_vmm_call() -> ApiCall {
    ApiCall::put_empty(call("vmm.shutdown"))
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
    }
}
