//! What a saved VM state depends on. A VMM loads a state only into a VM built exactly like
//! the one that saved it, so each snapshot records the [`Profile`] of its VM, and a restore
//! compares it with the profile of the VM it would launch and refuses on any difference,
//! naming it, before a VMM is started.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// `qemu`, `firecracker`, `cloud-hypervisor`.
    pub vmm: String,
    /// The VMM's version line.
    pub vmm_version: String,
    pub machine: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    pub cpu_model: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// The kernel and initramfs files (their names carry their version or content hash).
    pub kernel: String,
    pub initrd: String,
    /// The shared read-only root filesystem, if any.
    pub rootfs: Option<String>,
    /// The guest's devices, in the order the VMM creates them.
    pub devices: Vec<String>,
}

impl Profile {
    /// Each way `self` (where a snapshot would load) differs from `saved`, as
    /// "field: snapshot X, here Y". Empty when the snapshot can be restored.
    pub fn mismatches(&self, saved: &Profile) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |field: &str, snap: String, here: String| {
            if snap != here {
                out.push(format!("{field}: snapshot {snap}, here {here}"));
            }
        };
        check("vmm", saved.vmm.clone(), self.vmm.clone());
        check(
            "vmm version",
            saved.vmm_version.clone(),
            self.vmm_version.clone(),
        );
        check("machine", saved.machine.clone(), self.machine.clone());
        check("accelerator", saved.accel.clone(), self.accel.clone());
        check("cpu model", saved.cpu_model.clone(), self.cpu_model.clone());
        check("vcpus", saved.vcpus.to_string(), self.vcpus.to_string());
        check(
            "memory_mib",
            saved.memory_mib.to_string(),
            self.memory_mib.to_string(),
        );
        check("kernel", saved.kernel.clone(), self.kernel.clone());
        check("initrd", saved.initrd.clone(), self.initrd.clone());
        let none = || "none".to_string();
        check(
            "root filesystem",
            saved.rootfs.clone().unwrap_or_else(none),
            self.rootfs.clone().unwrap_or_else(none),
        );
        check("devices", saved.devices.join(","), self.devices.join(","));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        Profile {
            vmm: "qemu".into(),
            vmm_version: "QEMU emulator version 7.2.0".into(),
            machine: "microvm".into(),
            accel: "tcg".into(),
            cpu_model: "qemu64".into(),
            vcpus: 1,
            memory_mib: 256,
            kernel: "/boot/vmlinuz-6.1".into(),
            initrd: "/images/initramfs-ab.cpio".into(),
            rootfs: None,
            devices: vec!["virtio-serial".into(), "virtio-rng".into()],
        }
    }

    #[test]
    fn names_every_difference() {
        let saved = profile();
        assert!(profile().mismatches(&saved).is_empty());
        let mut here = profile();
        here.accel = "kvm".into();
        here.memory_mib = 512;
        let m = here.mismatches(&saved);
        assert_eq!(
            m,
            vec![
                "accelerator: snapshot tcg, here kvm",
                "memory_mib: snapshot 256, here 512"
            ]
        );
    }
}
