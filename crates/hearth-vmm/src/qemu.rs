//! The QEMU driver: the `microvm` machine, KVM when the host has proven it works and TCG
//! otherwise, one run dir per VM holding its sockets, serial log and pid file.
//!
//! The guest channel is a virtio-serial port backed by a Unix socket QEMU listens on
//! (`guest.sock`); it survives the host side reconnecting and snapshots. The serial console
//! goes to `serial.log`. QEMU runs in its own process group, so it outlives an agent restart.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::net::UnixStream;

/// The virtio-serial port name the guest agent looks for.
pub const GUEST_PORT: &str = "org.hearth.guest.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

#[derive(Debug, Clone)]
pub struct QemuSpec {
    pub binary: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub accel: Accel,
    pub hostname: String,
    pub run_dir: PathBuf,
}

impl QemuSpec {
    pub fn guest_socket(&self) -> PathBuf {
        self.run_dir.join("guest.sock")
    }
    pub fn qmp_socket(&self) -> PathBuf {
        self.run_dir.join("qmp.sock")
    }
    pub fn serial_log(&self) -> PathBuf {
        self.run_dir.join("serial.log")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.run_dir.join("qemu.pid")
    }

    /// The kernel command line.
    pub fn append(&self) -> String {
        let mut a = format!(
            "console=ttyS0 panic=-1 quiet hearth.hostname={}",
            self.hostname
        );
        if self.accel == Accel::Tcg {
            // microvm has no HPET or PM timer: without this a busy host can hang TSC
            // calibration forever.
            if let Some(khz) = host_tsc_khz() {
                a.push_str(&format!(" tsc_early_khz={khz}"));
            }
        }
        a
    }

    /// QEMU's arguments (without the binary).
    pub fn args(&self) -> Vec<String> {
        let p = |p: PathBuf| p.display().to_string();
        let mut args: Vec<String> = vec![
            "-M".into(),
            "microvm,isa-serial=on,pit=on,pic=on,rtc=on".into(),
            "-accel".into(),
            self.accel.name().into(),
        ];
        if self.accel == Accel::Kvm {
            args.extend(["-cpu".into(), "host".into()]);
        }
        args.extend([
            "-m".into(),
            format!("{}M", self.memory_mib),
            "-smp".into(),
            self.vcpus.to_string(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-nographic".into(),
            "-no-reboot".into(),
            "-serial".into(),
            format!("file:{}", p(self.serial_log())),
            "-kernel".into(),
            p(self.kernel.clone()),
            "-initrd".into(),
            p(self.initrd.clone()),
            "-append".into(),
            self.append(),
            "-device".into(),
            "virtio-serial-device".into(),
            "-chardev".into(),
            format!(
                "socket,id=guest0,path={},server=on,wait=off",
                p(self.guest_socket())
            ),
            "-device".into(),
            format!("virtserialport,chardev=guest0,name={GUEST_PORT}"),
            "-device".into(),
            "virtio-rng-device".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", p(self.qmp_socket())),
            "-pidfile".into(),
            p(self.pid_file()),
        ]);
        args
    }
}

/// The host's TSC frequency in kHz, from /proc/cpuinfo.
pub fn host_tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0).round() as u64)
}

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("starting QEMU: {0}")]
    Spawn(std::io::Error),
    #[error("QEMU exited at start ({status}): {stderr}")]
    EarlyExit { status: String, stderr: String },
    #[error("the guest channel did not open within {0:?}")]
    ChannelTimeout(Duration),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A running QEMU process.
pub struct QemuVm {
    pub spec: QemuSpec,
    pub pid: u32,
    child: tokio::process::Child,
}

impl QemuVm {
    /// Starts QEMU and waits (briefly) until its sockets exist.
    pub async fn launch(spec: QemuSpec) -> Result<QemuVm, QemuError> {
        std::fs::create_dir_all(&spec.run_dir)?;
        for f in [spec.guest_socket(), spec.qmp_socket(), spec.pid_file()] {
            let _ = std::fs::remove_file(f);
        }
        let stderr = std::fs::File::create(spec.run_dir.join("qemu.stderr"))?;
        let mut child = tokio::process::Command::new(&spec.binary)
            .args(spec.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(QemuError::Spawn)?;
        let pid = child.id().unwrap_or(0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !(spec.guest_socket().exists() && spec.qmp_socket().exists()) {
            if let Some(status) = child.try_wait()? {
                let stderr =
                    std::fs::read_to_string(spec.run_dir.join("qemu.stderr")).unwrap_or_default();
                return Err(QemuError::EarlyExit {
                    status: status.to_string(),
                    stderr: stderr.trim().to_string(),
                });
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.start_kill();
                return Err(QemuError::ChannelTimeout(Duration::from_secs(10)));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(QemuVm { spec, pid, child })
    }

    /// A byte stream to the guest agent's port.
    pub async fn guest_stream(&self) -> Result<UnixStream, QemuError> {
        Ok(UnixStream::connect(self.spec.guest_socket()).await?)
    }

    /// Whether QEMU has exited, and how.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// Kills QEMU and waits for it.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// The last `n` lines of the serial log.
    pub fn serial_tail(&self, n: usize) -> String {
        serial_tail(&self.spec.serial_log(), n)
    }
}

pub fn serial_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(accel: Accel) -> QemuSpec {
        QemuSpec {
            binary: "qemu-system-x86_64".into(),
            kernel: "/boot/vmlinuz".into(),
            initrd: "/x/initrd".into(),
            vcpus: 2,
            memory_mib: 256,
            accel,
            hostname: "web1".into(),
            run_dir: "/run/h/vm1".into(),
        }
    }

    #[test]
    fn command_line_follows_the_platform_notes() {
        let a = spec(Accel::Tcg).args().join(" ");
        assert!(
            a.contains("-M microvm,isa-serial=on,pit=on,pic=on,rtc=on -accel tcg"),
            "{a}"
        );
        assert!(a.contains("-m 256M -smp 2"));
        assert!(a.contains("socket,id=guest0,path=/run/h/vm1/guest.sock,server=on,wait=off"));
        assert!(a.contains(&format!("name={GUEST_PORT}")));
        assert!(a.contains("hearth.hostname=web1"));
        assert!(
            !a.contains("acpi=off"),
            "microvm finds virtio-mmio through ACPI"
        );
        if host_tsc_khz().is_some() {
            assert!(a.contains("tsc_early_khz="));
        }
        let k = spec(Accel::Kvm).args().join(" ");
        assert!(k.contains("-accel kvm -cpu host") && !k.contains("tsc_early_khz"));
    }
}
