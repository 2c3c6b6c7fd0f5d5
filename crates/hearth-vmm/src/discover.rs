//! Finding VMM binaries and their versions.
//!
//! Each VMM is looked up through an environment override first (`HEARTH_QEMU_BIN`,
//! `HEARTH_FIRECRACKER_BIN`, `HEARTH_CLOUD_HYPERVISOR_BIN`), then on `PATH`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hearth_types::host::VmmInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmmKind {
    Qemu,
    Firecracker,
    CloudHypervisor,
}

impl VmmKind {
    pub const ALL: [VmmKind; 3] = [
        VmmKind::Qemu,
        VmmKind::Firecracker,
        VmmKind::CloudHypervisor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            VmmKind::Qemu => "qemu",
            VmmKind::Firecracker => "firecracker",
            VmmKind::CloudHypervisor => "cloud-hypervisor",
        }
    }

    /// The binary's usual name.
    pub fn binary(self) -> &'static str {
        match self {
            VmmKind::Qemu => "qemu-system-x86_64",
            VmmKind::Firecracker => "firecracker",
            VmmKind::CloudHypervisor => "cloud-hypervisor",
        }
    }

    fn env_override(self) -> &'static str {
        match self {
            VmmKind::Qemu => "HEARTH_QEMU_BIN",
            VmmKind::Firecracker => "HEARTH_FIRECRACKER_BIN",
            VmmKind::CloudHypervisor => "HEARTH_CLOUD_HYPERVISOR_BIN",
        }
    }

    /// The oldest version Hearth drives: Firecracker 1.8 describes its devices through
    /// ACPI (kernels built without virtio-mmio command-line devices, such as Debian's,
    /// find them only so); Cloud Hypervisor 40 has the API Hearth is written against.
    pub fn min_version(self) -> Option<(u32, u32)> {
        match self {
            VmmKind::Qemu => None,
            VmmKind::Firecracker => Some((1, 8)),
            VmmKind::CloudHypervisor => Some((40, 0)),
        }
    }

    /// Whether this VMM needs hardware KVM (QEMU can fall back to TCG).
    pub fn needs_kvm(self) -> bool {
        !matches!(self, VmmKind::Qemu)
    }

    /// The binary to run: the environment override, else the first match on `PATH`.
    pub fn locate(self) -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(self.env_override()) {
            let p = PathBuf::from(p);
            return p.is_file().then_some(p);
        }
        which(self.binary())
    }
}

impl std::str::FromStr for VmmKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VmmKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!("unknown VMM {s:?}: expected qemu, firecracker or cloud-hypervisor")
            })
    }
}

/// The first executable named `binary` on `PATH`.
pub fn which(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `binary --version` (bounded to 5 s) and returns the first line.
pub async fn version_of(binary: &Path) -> Option<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::process::Command::new(binary)
            .arg("--version")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

/// `binary --version`, run once per binary file (a replaced binary is asked again): a
/// snapshot and each restore record it, and a restore must not wait on a subprocess.
pub async fn cached_version_of(binary: &Path) -> String {
    type Cache = std::sync::Mutex<std::collections::HashMap<(PathBuf, SystemTime), String>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let modified = std::fs::metadata(binary)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let key = (binary.to_path_buf(), modified);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return v.clone();
    }
    let v = version_of(binary).await.unwrap_or_else(|| "unknown".into());
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, v.clone());
    v
}

/// The (major, minor) of a version line such as `Firecracker v1.8.0` or
/// `cloud-hypervisor v40.0.0`.
pub fn parse_version(line: &str) -> Option<(u32, u32)> {
    let v = line.split_whitespace().find_map(|w| {
        w.strip_prefix('v')
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    })?;
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().unwrap_or(0),
    ))
}

/// Every VMM Hearth knows, with whether this host can run it. `kvm_usable` is the host's
/// verdict on hardware KVM (see the agent's probe).
pub async fn discover_vmms(kvm_usable: bool) -> Vec<VmmInfo> {
    let mut out = Vec::new();
    for kind in VmmKind::ALL {
        let path = kind.locate();
        let version = match &path {
            Some(p) => version_of(p).await,
            None => None,
        };
        let reason = unusable(kind, path.is_some(), version.as_deref(), kvm_usable);
        out.push(VmmInfo {
            name: kind.name().to_string(),
            usable: reason.is_none(),
            version,
            path: path.map(|p| p.display().to_string()),
            reason,
        });
    }
    out
}

/// The binary of `kind` when this host can run it, else why not (as
/// [`discover_vmms`] reports it). The version is asked once per binary.
pub async fn usable(kind: VmmKind, kvm_usable: bool) -> Result<PathBuf, String> {
    let path = kind.locate();
    let version = match &path {
        Some(p) => Some(cached_version_of(p).await),
        None => None,
    };
    match unusable(kind, path.is_some(), version.as_deref(), kvm_usable) {
        Some(why) => Err(format!("{} is not usable on this host: {why}", kind.name())),
        None => Ok(path.unwrap_or_default()),
    }
}

fn unusable(kind: VmmKind, found: bool, version: Option<&str>, kvm_usable: bool) -> Option<String> {
    if !found {
        Some(format!(
            "{} not found on PATH (set {} to its path)",
            kind.binary(),
            kind.env_override()
        ))
    } else if let Some(why) = too_old(kind, version) {
        Some(why)
    } else if kind.needs_kvm() && !kvm_usable {
        Some("needs hardware KVM, which is not usable on this host".to_string())
    } else {
        None
    }
}

/// Why `version` of `kind` is too old (or unreadable) for Hearth, if it is.
fn too_old(kind: VmmKind, version: Option<&str>) -> Option<String> {
    let (major, minor) = kind.min_version()?;
    let want = format!("{} v{major}.{minor} or later is needed", kind.name());
    match version.and_then(parse_version) {
        Some(have) if have >= (major, minor) => None,
        Some((a, b)) => Some(format!("version {a}.{b} is too old: {want}")),
        None => Some(format!("its version ({version:?}) is unreadable: {want}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_by_name() {
        for k in VmmKind::ALL {
            assert_eq!(k.name().parse::<VmmKind>().unwrap(), k);
        }
        assert!("xen".parse::<VmmKind>().unwrap_err().contains("qemu"));
    }

    #[test]
    fn old_versions_are_refused_with_what_is_needed() {
        assert_eq!(parse_version("Firecracker v1.8.0"), Some((1, 8)));
        assert_eq!(
            parse_version("cloud-hypervisor v40.0.0-dirty"),
            Some((40, 0))
        );
        assert_eq!(
            too_old(VmmKind::Firecracker, Some("Firecracker v1.12.1")),
            None
        );
        let why = too_old(VmmKind::Firecracker, Some("Firecracker v1.7.0")).unwrap();
        assert!(
            why.contains("1.7 is too old") && why.contains("v1.8"),
            "{why}"
        );
        assert!(too_old(VmmKind::CloudHypervisor, None)
            .unwrap()
            .contains("unreadable"));
        assert_eq!(too_old(VmmKind::Qemu, None), None);
    }

    #[tokio::test]
    async fn missing_binaries_say_why() {
        let vmms = discover_vmms(false).await;
        assert_eq!(vmms.len(), 3);
        for v in &vmms {
            if v.path.is_none() {
                assert!(!v.usable);
                assert!(v.reason.as_deref().unwrap().contains("not found"), "{v:?}");
            }
        }
        let fc = vmms.iter().find(|v| v.name == "firecracker").unwrap();
        assert!(!fc.usable, "firecracker cannot be usable without KVM");
    }
}
