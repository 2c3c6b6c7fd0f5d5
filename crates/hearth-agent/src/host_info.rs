//! What this host has: CPUs, memory, disk under the data dir, accelerators and VMMs. The
//! report goes out with every heartbeat and answers `GetHostInfo`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearth_agent_api::pb;
use hearth_types::host::{Resources, VmmInfo};

use crate::accel::AccelState;
use crate::image::Images;

/// How long a look at the installed VMMs (which runs each binary for its version) stays
/// good; a VMM installed meanwhile shows up within this.
const VMM_REFRESH: Duration = Duration::from_secs(60);

type Discovery = Option<(Instant, bool, Vec<VmmInfo>)>;

#[derive(Clone)]
pub struct HostProbe {
    data_dir: PathBuf,
    accel: AccelState,
    images: Images,
    net: Arc<crate::net::HostNet>,
    labels: std::collections::HashMap<String, String>,
    /// The last VMM discovery: when, for which KVM state, and what it found.
    vmms: Arc<Mutex<Discovery>>,
}

impl HostProbe {
    pub fn new(
        data_dir: &Path,
        accel: AccelState,
        images: Images,
        net: Arc<crate::net::HostNet>,
        labels: std::collections::HashMap<String, String>,
    ) -> HostProbe {
        HostProbe {
            labels,
            data_dir: data_dir.to_path_buf(),
            accel,
            images,
            net,
            vmms: Arc::default(),
        }
    }

    /// Resolves when the images change (the report should go out now).
    pub async fn images_changed(&self) {
        self.images.changed().await
    }

    async fn vmms(&self, kvm_usable: bool) -> Vec<VmmInfo> {
        let cached = self
            .vmms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(at, kvm, _)| *kvm == kvm_usable && at.elapsed() < VMM_REFRESH)
            .map(|(_, _, v)| v.clone());
        if let Some(v) = cached {
            return v;
        }
        let found = hearth_vmm::discover_vmms(kvm_usable).await;
        *self.vmms.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), kvm_usable, found.clone()));
        found
    }

    pub async fn report(&self) -> pb::HostInfo {
        let accelerators = self.accel.report();
        let kvm_usable = accelerators.iter().any(|a| a.name == "kvm" && a.usable);
        let vmms = self.vmms(kvm_usable).await;
        pb::HostInfo {
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            capacity: Some(capacity(&self.data_dir).into()),
            accelerators: accelerators.into_iter().map(Into::into).collect(),
            vmms: vmms.into_iter().map(Into::into).collect(),
            images: self.images.report(),
            disk: Some(self.disk_use()),
            manages_networks: self.net.refused().is_none(),
            networks_note: self.net.refused().unwrap_or_default().to_string(),
            labels: self.labels.clone(),
        }
    }

    /// What VM disks and snapshots take in the data dir, and what its file system has left.
    fn disk_use(&self) -> pb::DiskUse {
        let (vm_disks_bytes, snapshots_bytes) =
            crate::vm::files::Roots::new(&self.data_dir).usage();
        let (free_bytes, total_bytes) = nix::sys::statvfs::statvfs(&self.data_dir)
            .map(|s| {
                let f = s.fragment_size();
                (s.blocks_available() * f, s.blocks() * f)
            })
            .unwrap_or((0, 0));
        pb::DiskUse {
            vm_disks_bytes,
            snapshots_bytes,
            free_bytes,
            total_bytes,
        }
    }
}

pub fn capacity(data_dir: &Path) -> Resources {
    let vcpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| meminfo_kib(&s, "MemTotal:"))
        .map(|kib| kib / 1024)
        .unwrap_or(0);
    let disk_mib = nix::sys::statvfs::statvfs(data_dir)
        .map(|s| s.blocks_available() * s.fragment_size() / (1024 * 1024))
        .unwrap_or(0);
    Resources {
        vcpus,
        memory_mib,
        disk_mib,
    }
}

fn meminfo_kib(meminfo: &str, key: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo() {
        let s = "MemTotal:       24576000 kB\nMemFree: 1 kB\n";
        assert_eq!(meminfo_kib(s, "MemTotal:"), Some(24576000));
        assert_eq!(meminfo_kib(s, "Nope:"), None);
    }

    #[test]
    fn capacity_is_nonzero_here() {
        let c = capacity(Path::new("/"));
        assert!(c.vcpus >= 1 && c.memory_mib > 0 && c.disk_mib > 0, "{c:?}");
    }
}
