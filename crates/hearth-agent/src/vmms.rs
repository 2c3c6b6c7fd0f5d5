//! Which VMM runs a VM here: the one its spec names, or this host's default (Firecracker
//! when it is usable, else QEMU). A VMM is usable as the host report says
//! ([`hearth_vmm::discover::usable`]): its binary found, recent enough, and for Firecracker
//! and Cloud Hypervisor, hardware KVM usable. Asked at each start, so a VMM installed (or
//! KVM proven) meanwhile is used without a restart.

use std::path::PathBuf;
use std::sync::Arc;

use hearth_vmm::cloud_hypervisor::CloudHypervisor;
use hearth_vmm::firecracker::{Firecracker, Jailer};
use hearth_vmm::qemu::Qemu;
use hearth_vmm::{Accel, Hypervisor, VmmKind};

use crate::accel::AccelState;

/// The user Firecracker runs as under its jailer, unless `HEARTH_JAILER_UID` and
/// `HEARTH_JAILER_GID` say otherwise: `nobody`.
const JAILER_DEFAULT_ID: u32 = 65534;

pub struct Vmms {
    accel: AccelState,
    /// Where kernels extracted for Firecracker and Cloud Hypervisor are kept.
    cache_dir: PathBuf,
}

impl Vmms {
    pub fn new(accel: AccelState, cache_dir: PathBuf) -> Vmms {
        Vmms { accel, cache_dir }
    }

    fn kvm(&self) -> bool {
        self.accel.choose() == Accel::Kvm
    }

    /// The driver for `vmm` (a name, or empty for this host's default: Firecracker when
    /// it is usable, else QEMU), or why this host cannot run it.
    pub async fn get(&self, vmm: &str) -> Result<Arc<dyn Hypervisor>, String> {
        let fc = VmmKind::Firecracker;
        if vmm.is_empty() {
            return Ok(match hearth_vmm::discover::usable(fc, self.kvm()).await {
                Ok(binary) => self.driver(fc, Some(binary)),
                Err(_) => self.driver(VmmKind::Qemu, VmmKind::Qemu.locate()),
            });
        }
        let kind: VmmKind = vmm.parse()?;
        if kind == VmmKind::Qemu {
            // QEMU falls back to TCG; a missing binary says so when it is started.
            return Ok(self.driver(kind, kind.locate()));
        }
        let binary = hearth_vmm::discover::usable(kind, self.kvm()).await?;
        Ok(self.driver(kind, Some(binary)))
    }

    /// Who a jailed Firecracker runs as (uid, gid), when this host has a jailer.
    pub fn jail_ids(&self) -> Option<(u32, u32)> {
        let j = jailer(&VmmKind::Firecracker.locate()?)?;
        Some((j.uid, j.gid))
    }

    /// The driver of `kind` for `binary` (its default name when none), unchecked: what
    /// takes over a VMM a previous agent run left needs no more.
    pub fn driver(&self, kind: VmmKind, binary: Option<PathBuf>) -> Arc<dyn Hypervisor> {
        let binary = binary.unwrap_or_else(|| kind.binary().into());
        match kind {
            VmmKind::Qemu => Arc::new(Qemu { binary }),
            VmmKind::Firecracker => Arc::new(Firecracker {
                jailer: jailer(&binary),
                binary,
                cache_dir: self.cache_dir.clone(),
            }),
            VmmKind::CloudHypervisor => Arc::new(CloudHypervisor {
                binary,
                cache_dir: self.cache_dir.clone(),
            }),
        }
    }
}

/// Firecracker's jailer, when the agent runs as root and one is found: `HEARTH_JAILER_BIN`,
/// else `jailer` beside Firecracker's binary or on `PATH`.
fn jailer(firecracker: &std::path::Path) -> Option<Jailer> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { nix::libc::geteuid() } != 0 {
        return None;
    }
    let binary = match std::env::var_os("HEARTH_JAILER_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let beside = firecracker.with_file_name("jailer");
            if beside.is_file() {
                beside
            } else {
                hearth_vmm::discover::which("jailer")?
            }
        }
    };
    let id = |var: &str| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(JAILER_DEFAULT_ID)
    };
    binary.is_file().then(|| Jailer {
        binary,
        uid: id("HEARTH_JAILER_UID"),
        gid: id("HEARTH_JAILER_GID"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::KvmVerdict;

    #[tokio::test]
    async fn without_kvm_the_default_is_qemu_and_the_others_say_why_not() {
        let vmms = Vmms::new(
            AccelState::new(KvmVerdict::Unusable {
                reason: "test".into(),
            }),
            std::env::temp_dir(),
        );
        assert_eq!(vmms.get("").await.unwrap().kind(), VmmKind::Qemu);
        assert_eq!(vmms.get("qemu").await.unwrap().kind(), VmmKind::Qemu);
        for vmm in ["firecracker", "cloud-hypervisor"] {
            let why = vmms.get(vmm).await.err().unwrap();
            assert!(why.contains("not usable on this host"), "{why}");
        }
        let why = vmms.get("xen").await.err().unwrap();
        assert!(why.contains("unknown VMM"), "{why}");
    }
}
