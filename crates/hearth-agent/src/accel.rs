//! Which accelerator this host's VMs use, decided once per host.
//!
//! TCG always works where QEMU is installed. KVM counts only once a real guest has booted
//! under it: a `/dev/kvm` that opens can still be a nested one that runs no ordinary kernel
//! (QEMU aborts, or the guest hangs). So the agent boots a probe guest under KVM in the
//! background at start; until the verdict is in, VMs run under TCG. The verdict is kept in
//! `<data dir>/kvm-probe.json`, keyed by the kernel and QEMU it was reached with, so it is
//! decided once per host and again only when either changes.
//!
//! [`AccelMode::Tcg`] (`--accel tcg`) skips the probe and KVM; [`AccelMode::Kvm`] trusts KVM
//! unprobed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hearth_guest_proto::client::GuestClient;
use hearth_types::host::Accelerator;
use hearth_vmm::qemu::Qemu;
use hearth_vmm::{Accel, Hypervisor, VmConfig};
use serde::{Deserialize, Serialize};

use crate::image::BootImage;

/// How long a probe guest gets to answer under KVM (an ordinary boot takes well under 2 s).
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum KvmVerdict {
    Unknown { reason: String },
    Usable { reason: String },
    Unusable { reason: String },
}

/// How the agent picks an accelerator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AccelMode {
    /// Probe KVM once per host; TCG until (and unless) it proves itself.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl std::str::FromStr for AccelMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AccelMode::Auto),
            "kvm" => Ok(AccelMode::Kvm),
            "tcg" => Ok(AccelMode::Tcg),
            other => Err(format!(
                "unknown accelerator mode {other:?}: use auto, kvm or tcg"
            )),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Saved {
    key: String,
    verdict: KvmVerdict,
}

#[derive(Clone)]
pub struct AccelState {
    kvm: Arc<RwLock<KvmVerdict>>,
}

impl AccelState {
    pub fn new(verdict: KvmVerdict) -> AccelState {
        AccelState {
            kvm: Arc::new(RwLock::new(verdict)),
        }
    }

    pub fn kvm(&self) -> KvmVerdict {
        self.kvm.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, v: KvmVerdict) {
        *self.kvm.write().unwrap_or_else(|p| p.into_inner()) = v;
    }

    /// The accelerator a new VM gets.
    pub fn choose(&self) -> Accel {
        match self.kvm() {
            KvmVerdict::Usable { .. } => Accel::Kvm,
            _ => Accel::Tcg,
        }
    }

    pub fn report(&self) -> Vec<Accelerator> {
        let (usable, reason) = match self.kvm() {
            KvmVerdict::Usable { reason } => (true, reason),
            KvmVerdict::Unusable { reason } | KvmVerdict::Unknown { reason } => (false, reason),
        };
        vec![
            Accelerator {
                name: "kvm".into(),
                usable,
                reason: Some(reason),
            },
            Accelerator {
                name: "tcg".into(),
                usable: hearth_vmm::VmmKind::Qemu.locate().is_some(),
                reason: None,
            },
        ]
    }

    /// Sets the initial verdict and, when one is needed, probes KVM in the background.
    pub fn start(data_dir: &Path, image: Option<BootImage>, mode: AccelMode) -> AccelState {
        let unknown = |r: &str| KvmVerdict::Unknown { reason: r.into() };
        let state = match mode {
            AccelMode::Tcg => {
                return AccelState::new(KvmVerdict::Unusable {
                    reason: "not used: the agent runs with --accel tcg".into(),
                })
            }
            AccelMode::Kvm => {
                return AccelState::new(KvmVerdict::Usable {
                    reason: "trusted without a probe: --accel kvm".into(),
                })
            }
            AccelMode::Auto => AccelState::new(unknown("being probed")),
        };
        if let Err(why) = kvm_openable() {
            state.set(KvmVerdict::Unusable { reason: why });
            return state;
        }
        let (Some(qemu), Some(image)) = (hearth_vmm::VmmKind::Qemu.locate(), image) else {
            state.set(unknown("not probed: QEMU or the default image is missing"));
            return state;
        };
        let cache = data_dir.join("kvm-probe.json");
        let key = cache_key(&image, &qemu);
        if let Some(saved) = std::fs::read(&cache)
            .ok()
            .and_then(|b| serde_json::from_slice::<Saved>(&b).ok())
            .filter(|s| s.key == key)
        {
            state.set(saved.verdict);
            return state;
        }
        let run_dir = data_dir.join("run").join("kvm-probe");
        let bg = state.clone();
        tokio::spawn(async move {
            let verdict = probe(qemu, &image, &run_dir).await;
            tracing::info!(?verdict, "KVM probe finished");
            let _ = std::fs::remove_dir_all(&run_dir);
            let saved = Saved {
                key,
                verdict: verdict.clone(),
            };
            if let Ok(b) = serde_json::to_vec_pretty(&saved) {
                let _ = std::fs::write(&cache, b);
            }
            bg.set(verdict);
        });
        state
    }
}

/// What a cached verdict is valid for: this kernel and this QEMU binary.
fn cache_key(image: &BootImage, qemu: &Path) -> String {
    let qemu_mtime = std::fs::metadata(qemu)
        .and_then(|m| m.modified())
        .map(|t| format!("{t:?}"))
        .unwrap_or_default();
    format!("{}|{qemu_mtime}", image.kernel_version)
}

fn kvm_openable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm cannot be opened: {e}"))
}

/// Boots the default image under KVM and waits for its guest agent.
pub async fn probe(qemu: PathBuf, image: &BootImage, run_dir: &Path) -> KvmVerdict {
    let config = VmConfig {
        kernel: image.kernel.clone(),
        initrd: image.initrd.clone(),
        rootfs: None,
        disk: None,
        incoming: None,
        volumes: vec![],
        user_net: None,
        tap: None,
        vcpus: 1,
        memory_mib: 128,
        accel: Accel::Kvm,
        hostname: "kvm-probe".into(),
        run_dir: run_dir.to_path_buf(),
    };
    let vm = match (Qemu { binary: qemu }).launch(&config).await {
        Ok(vm) => vm,
        Err(e) => {
            return KvmVerdict::Unusable {
                reason: format!("QEMU fails to start under KVM: {e}"),
            }
        }
    };
    let answered = async {
        let io = vm.control.guest_stream().await.ok()?;
        GuestClient::connect(io, PROBE_TIMEOUT).await.ok()
    };
    let mut exit = vm.exit;
    let mut exited = false;
    let verdict = match tokio::time::timeout(PROBE_TIMEOUT, answered).await {
        Ok(Some(_)) => KvmVerdict::Usable {
            reason: "a probe guest booted under KVM".into(),
        },
        _ => match exit.try_recv() {
            // QEMU itself gave up (a nested PVM KVM aborts on an MSR an ordinary kernel sets).
            Ok(how) => {
                exited = true;
                let stderr =
                    std::fs::read_to_string(run_dir.join("qemu.stderr")).unwrap_or_default();
                let first = stderr.lines().next().unwrap_or("").trim().to_string();
                KvmVerdict::Unusable {
                    reason: format!("QEMU stops under KVM ({how}: {first}); VMs run under TCG"),
                }
            }
            Err(_) => KvmVerdict::Unusable {
                reason: format!(
                    "a probe guest did not reach its agent within {} s under KVM (a nested or \
                     restricted KVM?); VMs run under TCG",
                    PROBE_TIMEOUT.as_secs()
                ),
            },
        },
    };
    if !exited {
        vm.control.kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), exit).await;
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_image(dir: &Path) -> BootImage {
        BootImage {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd"),
            rootfs: None,
            run: None,
            kernel_version: "6.1.0-test".into(),
        }
    }

    #[tokio::test]
    async fn forced_modes_skip_the_probe() {
        let dir = tempfile::tempdir().unwrap();
        let tcg = AccelState::start(dir.path(), Some(fake_image(dir.path())), AccelMode::Tcg);
        assert_eq!(tcg.choose(), Accel::Tcg);
        assert!(!tcg.report()[0].usable);
        let kvm = AccelState::start(dir.path(), None, AccelMode::Kvm);
        assert_eq!(kvm.choose(), Accel::Kvm);
        assert!(!dir.path().join("kvm-probe.json").exists());
        assert_eq!("auto".parse::<AccelMode>(), Ok(AccelMode::Auto));
        assert!("hvf".parse::<AccelMode>().is_err());
    }

    #[tokio::test]
    async fn a_cached_verdict_is_used_without_probing_again() {
        if kvm_openable().is_err() || hearth_vmm::VmmKind::Qemu.locate().is_none() {
            eprintln!("skipped: needs /dev/kvm and QEMU to reach the cache");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = fake_image(dir.path());
        let qemu = hearth_vmm::VmmKind::Qemu.locate().unwrap();
        let key = cache_key(&image, &qemu);
        let saved = Saved {
            key,
            verdict: KvmVerdict::Usable {
                reason: "cached".into(),
            },
        };
        std::fs::write(
            dir.path().join("kvm-probe.json"),
            serde_json::to_vec(&saved).unwrap(),
        )
        .unwrap();
        // The image files do not exist: a probe would fail, so Usable proves the cache.
        let s = AccelState::start(dir.path(), Some(image), AccelMode::Auto);
        assert_eq!(s.choose(), Accel::Kvm);
        assert_eq!(s.report()[0].reason.as_deref(), Some("cached"));
    }
}
