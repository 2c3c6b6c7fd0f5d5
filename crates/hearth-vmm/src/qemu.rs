//! The QEMU driver: the `microvm` machine, KVM when the host has proven it works and TCG
//! otherwise, one run dir per VM holding its sockets, serial log and pid file.
//!
//! The guest channel is a virtio-serial port backed by a Unix socket QEMU listens on
//! (`guest.sock`); it survives the host side reconnecting and snapshots. The serial console
//! goes to `serial.log`; QMP listens on `qmp.sock`. QEMU runs in its own process group, so a
//! signal meant for the agent's terminal does not reach it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::process;
use crate::qmp::Qmp;
use crate::snapshot::Profile;
use crate::{
    Accel, Adopted, GuestIo, Hypervisor, Launched, VmConfig, VmControl, VmmError, VmmKind,
};

/// The virtio-serial port name the guest agent looks for.
pub const GUEST_PORT: &str = "org.hearth.guest.0";

/// The file of a saved state's directory QEMU writes its migration stream to.
pub const STATE_FILE: &str = "memory.bin";

/// How long QEMU gets to create its sockets.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const QMP_TIMEOUT: Duration = Duration::from_secs(5);

/// The files of a QEMU VM's run dir.
pub struct RunDir<'a>(pub &'a Path);

impl RunDir<'_> {
    pub fn guest_socket(&self) -> PathBuf {
        self.0.join("guest.sock")
    }
    pub fn qmp_socket(&self) -> PathBuf {
        self.0.join("qmp.sock")
    }
    pub fn serial_log(&self) -> PathBuf {
        self.0.join("serial.log")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.0.join("qemu.pid")
    }
    pub fn stderr_log(&self) -> PathBuf {
        self.0.join("qemu.stderr")
    }
}

/// How the guest finds its disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskNames {
    /// By their virtio serial numbers (`rootfs`, `disk`, `vol0`, …): QEMU, Cloud
    /// Hypervisor.
    Serial,
    /// By their order (`/dev/vda`, `/dev/vdb`, …): Firecracker, whose drives have no serial.
    Order,
}

/// The kernel command line.
pub fn append(config: &VmConfig) -> String {
    kernel_args(config, DiskNames::Serial)
}

/// The kernel command line, with the disks named as the guest will find them.
pub(crate) fn kernel_args(config: &VmConfig, names: DiskNames) -> String {
    let mut a = format!(
        "console=ttyS0 panic=-1 quiet hearth.hostname={}",
        config.hostname
    );
    if config.accel == Accel::Tcg {
        // microvm has no HPET or PM timer: without this a busy host can hang TSC
        // calibration forever.
        if let Some(khz) = host_tsc_khz() {
            a.push_str(&format!(" tsc_early_khz={khz}"));
        }
    }
    let drives = config.drives();
    let name = |id: &str| match names {
        DiskNames::Serial => id.to_string(),
        DiskNames::Order => {
            let i = drives.iter().position(|d| d.id == id).unwrap_or(0);
            format!("/dev/vd{}", (b'a' + i as u8) as char)
        }
    };
    if config.rootfs.is_some() {
        a.push_str(&format!(" hearth.rootfs={}", name("rootfs")));
    }
    if config.disk.is_some() {
        a.push_str(&format!(" hearth.disk={}", name("disk")));
    }
    if config.user_net.is_some() {
        a.push_str(" hearth.net=user");
    }
    if let Some(t) = &config.tap {
        a.push_str(&format!(" hearth.ip={}", t.address));
        if let Some(gw) = &t.gateway {
            a.push_str(&format!(" hearth.gw={gw}"));
        }
        if !t.dns.is_empty() {
            a.push_str(&format!(" hearth.dns={}", t.dns.join(",")));
        }
    }
    if !config.volumes.is_empty() {
        let list: Vec<String> = config
            .volumes
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{}:{}", v.name, name(&format!("vol{i}"))))
            .collect();
        a.push_str(&format!(" hearth.volumes={}", list.join(",")));
    }
    a
}

/// The CPU model the guest sees.
fn cpu_model(accel: Accel) -> &'static str {
    match accel {
        Accel::Kvm => "host",
        Accel::Tcg => "qemu64",
    }
}

/// The guest's devices, in creation order (a saved state loads only into the same list).
fn devices(config: &VmConfig) -> Vec<String> {
    let mut d = vec![
        "virtio-serial".to_string(),
        format!("virtserialport:{GUEST_PORT}"),
        "virtio-rng".to_string(),
        "virtio-balloon:free-page-reporting".to_string(),
    ];
    for drive in config.drives() {
        let mode = if drive.read_only { "ro" } else { "rw" };
        d.push(format!("virtio-blk:{}:{mode}", drive.id));
    }
    if config.user_net.is_some() {
        // Not its MAC: a clone's NIC takes the saved one with the device state.
        d.push("virtio-net:user".into());
    }
    if config.tap.is_some() {
        d.push("virtio-net:tap".into());
    }
    d
}

/// QEMU's arguments (without the binary).
pub fn args(config: &VmConfig) -> Vec<String> {
    let rd = RunDir(&config.run_dir);
    let p = |p: &Path| p.display().to_string();
    let mut args: Vec<String> = vec![
        "-M".into(),
        "microvm,isa-serial=on,pit=on,pic=on,rtc=on".into(),
        "-accel".into(),
        config.accel.name().into(),
    ];
    args.extend(["-cpu".into(), cpu_model(config.accel).into()]);
    args.extend([
        "-m".into(),
        format!("{}M", config.memory_mib),
        "-smp".into(),
        config.vcpus.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-nographic".into(),
        "-no-reboot".into(),
        "-serial".into(),
        format!("file:{}", p(&rd.serial_log())),
        "-kernel".into(),
        p(&config.kernel),
        "-initrd".into(),
        p(&config.initrd),
        "-append".into(),
        append(config),
        "-device".into(),
        "virtio-serial-device".into(),
        "-chardev".into(),
        format!(
            "socket,id=guest0,path={},server=on,wait=off",
            p(&rd.guest_socket())
        ),
        "-device".into(),
        format!("virtserialport,chardev=guest0,name={GUEST_PORT}"),
        "-device".into(),
        "virtio-rng-device".into(),
        // The guest hands back the memory it frees (in 2 MiB blocks, after a short
        // delay): QEMU drops those pages, so an idle VM holds less of the host's memory and
        // a snapshot of it is smaller.
        "-device".into(),
        "virtio-balloon-device,free-page-reporting=on".into(),
    ]);
    // QEMU option values escape a comma by doubling it.
    let drive = |id: &str, file: &Path, ro: bool| {
        [
            "-drive".to_string(),
            format!(
                "file={},if=none,id={id},format=raw{}",
                p(file).replace(',', ",,"),
                if ro { ",readonly=on" } else { "" }
            ),
            "-device".to_string(),
            format!("virtio-blk-device,drive={id},serial={id}"),
        ]
    };
    for d in config.drives() {
        args.extend(drive(&d.id, d.path, d.read_only));
    }
    if let Some(n) = &config.user_net {
        let mut netdev = "user,id=n0".to_string();
        for (proto, host, guest) in &n.forwards {
            netdev.push_str(&format!(",hostfwd={proto}:127.0.0.1:{host}-:{guest}"));
        }
        args.extend([
            "-netdev".into(),
            netdev,
            "-device".into(),
            format!("virtio-net-device,netdev=n0,mac={}", n.mac),
        ]);
    }
    if let Some(t) = &config.tap {
        args.extend([
            "-netdev".into(),
            format!(
                "tap,id=n0,ifname={},script=no,downscript=no,vhost=off",
                t.ifname
            ),
            "-device".into(),
            format!("virtio-net-device,netdev=n0,mac={}", t.mac),
        ]);
    }
    args.extend([
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", p(&rd.qmp_socket())),
        "-pidfile".into(),
        p(&rd.pid_file()),
    ]);
    if let Some(dir) = &config.incoming {
        args.extend([
            "-incoming".into(),
            format!("exec:cat {}", shell_quote(&dir.join(STATE_FILE))),
        ]);
    }
    args
}

/// `path` in single quotes for the shell QEMU runs `exec:` migration commands with.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// How long loading or saving a VM's state may take.
const STATE_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the query `command` every 5 ms until `decide` settles on an answer from its
/// result, bounded by [`STATE_TIMEOUT`] (`what` names the wait in the error).
async fn poll<T>(
    qmp: &mut Qmp,
    command: &str,
    what: &str,
    mut decide: impl FnMut(&serde_json::Value) -> Option<Result<T, VmmError>>,
) -> Result<T, VmmError> {
    let deadline = tokio::time::Instant::now() + STATE_TIMEOUT;
    loop {
        if let Some(answer) = decide(&qmp.execute(command, None).await?) {
            return answer;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(VmmError::Snapshot(format!(
                "{what} did not finish within {} s",
                STATE_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the migration in flight completes (or fails).
async fn wait_migration(qmp: &mut Qmp, what: &str) -> Result<(), VmmError> {
    poll(qmp, "query-migrate", what, |st| {
        match st.get("status").and_then(|s| s.as_str()).unwrap_or("") {
            "completed" => Some(Ok(())),
            "failed" | "cancelled" => {
                let why = st
                    .get("error-desc")
                    .and_then(|s| s.as_str())
                    .unwrap_or("no reason given");
                Some(Err(VmmError::Snapshot(format!("{what} failed: {why}"))))
            }
            _ => None,
        }
    })
    .await
}

/// The QEMU driver.
pub struct Qemu {
    pub binary: PathBuf,
}

#[async_trait]
impl Hypervisor for Qemu {
    fn kind(&self) -> VmmKind {
        VmmKind::Qemu
    }

    async fn version(&self) -> String {
        crate::discover::cached_version_of(&self.binary).await
    }

    async fn adopt(&self, run_dir: &Path) -> Result<Option<Adopted>, VmmError> {
        let rd = RunDir(run_dir);
        let Some((pid, pidfd)) = process::find(&rd.pid_file(), |pid| runs_in(pid, run_dir)) else {
            return Ok(None);
        };
        let mut qmp = Qmp::connect(&rd.qmp_socket(), QMP_TIMEOUT).await?;
        let status = qmp.execute("query-status", None).await?;
        drop(qmp);
        let paused = status.get("running").and_then(|r| r.as_bool()) == Some(false);
        let owned = process::watch_adopted(pid, pidfd)?;
        Ok(Some(Adopted {
            launched: launched(owned, run_dir),
            paused,
        }))
    }

    fn profile(&self, config: &VmConfig, version: &str) -> Profile {
        let p = |p: &Path| p.display().to_string();
        Profile {
            vmm: VmmKind::Qemu.name().into(),
            vmm_version: version.into(),
            machine: "microvm".into(),
            accel: config.accel.name().into(),
            cpu_model: cpu_model(config.accel).into(),
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
            kernel: p(&config.kernel),
            initrd: p(&config.initrd),
            rootfs: config.rootfs.as_deref().map(p),
            devices: devices(config),
        }
    }

    async fn launch(&self, config: &VmConfig) -> Result<Launched, VmmError> {
        let rd = RunDir(&config.run_dir);
        std::fs::create_dir_all(&config.run_dir)?;
        for f in [rd.guest_socket(), rd.qmp_socket(), rd.pid_file()] {
            let _ = std::fs::remove_file(f);
        }
        let stderr = std::fs::File::create(rd.stderr_log())?;
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args(args(config)).stdout(Stdio::null()).stderr(stderr);
        process::prepare(&mut cmd, config.tap_netns())?;
        let mut child = cmd.spawn().map_err(|source| VmmError::Spawn {
            vmm: "qemu",
            source,
        })?;
        let ready = || rd.guest_socket().exists() && rd.qmp_socket().exists();
        process::wait_ready("qemu", &mut child, &rd.stderr_log(), START_TIMEOUT, ready).await?;
        if config.incoming.is_some() {
            if let Err(e) = load_state(&rd).await {
                process::discard(child).await;
                return Err(e);
            }
        }
        Ok(launched(process::own(child, None), &config.run_dir))
    }
}

fn launched(owned: process::Owned, run_dir: &Path) -> Launched {
    Launched {
        pid: owned.pid,
        exit: owned.exit,
        control: std::sync::Arc::new(QemuControl {
            run_dir: run_dir.to_path_buf(),
            kill: owned.kill,
        }),
    }
}

/// Whether process `pid` is the QEMU of `run_dir`: its command line names the run dir (a
/// PID read from a pid file may have been reused by anything since).
pub fn runs_in(pid: i32, run_dir: &Path) -> bool {
    process::cmdline_names(pid, run_dir)
}

/// Waits for an incoming state to load, then lets the VM run.
async fn load_state(rd: &RunDir<'_>) -> Result<(), VmmError> {
    let mut qmp = Qmp::connect(&rd.qmp_socket(), QMP_TIMEOUT).await?;
    let what = "loading the saved state";
    // Whether the loaded VM still has to be let run.
    let held = poll(&mut qmp, "query-status", what, |st| {
        match st.get("status").and_then(|s| s.as_str()).unwrap_or("") {
            "inmigrate" => None,
            "running" => Some(Ok(false)),
            "paused" | "prelaunch" | "postmigrate" => Some(Ok(true)),
            other => Some(Err(VmmError::Snapshot(format!(
                "{what} failed (QEMU is {other})"
            )))),
        }
    })
    .await?;
    if held {
        qmp.execute("cont", None).await?;
    }
    Ok(())
}

struct QemuControl {
    run_dir: PathBuf,
    kill: mpsc::Sender<()>,
}

#[async_trait]
impl VmControl for QemuControl {
    async fn guest_stream(&self) -> Result<Box<dyn GuestIo>, VmmError> {
        let s = UnixStream::connect(RunDir(&self.run_dir).guest_socket()).await?;
        Ok(Box::new(s))
    }

    async fn power_off(&self) -> Result<(), VmmError> {
        let mut qmp = Qmp::connect(&RunDir(&self.run_dir).qmp_socket(), QMP_TIMEOUT).await?;
        qmp.execute("system_powerdown", None).await?;
        Ok(())
    }

    async fn pause(&self) -> Result<(), VmmError> {
        let mut qmp = Qmp::connect(&RunDir(&self.run_dir).qmp_socket(), QMP_TIMEOUT).await?;
        qmp.execute("stop", None).await?;
        Ok(())
    }

    async fn resume(&self) -> Result<(), VmmError> {
        let mut qmp = Qmp::connect(&RunDir(&self.run_dir).qmp_socket(), QMP_TIMEOUT).await?;
        qmp.execute("cont", None).await?;
        Ok(())
    }

    async fn user_forward(
        &self,
        add: bool,
        protocol: &str,
        host_port: u16,
        guest_port: u16,
    ) -> Result<(), VmmError> {
        // No QMP command for it: the human monitor's, whose errors come back as its output.
        let line = if add {
            format!("hostfwd_add n0 {protocol}:127.0.0.1:{host_port}-:{guest_port}")
        } else {
            format!("hostfwd_remove n0 {protocol}:127.0.0.1:{host_port}")
        };
        let mut qmp = Qmp::connect(&RunDir(&self.run_dir).qmp_socket(), QMP_TIMEOUT).await?;
        let out = qmp
            .execute(
                "human-monitor-command",
                Some(serde_json::json!({ "command-line": line })),
            )
            .await?;
        // `hostfwd_add` says nothing when it works; `hostfwd_remove` says "… removed".
        match out.as_str().map(str::trim) {
            Some("") | None => Ok(()),
            Some(said) if !add && said.ends_with("removed") => Ok(()),
            Some(err) => Err(VmmError::Refused(format!("{line}: {err}"))),
        }
    }

    async fn save(&self, dir: &Path) -> Result<(), VmmError> {
        let path = dir.join(STATE_FILE);
        let mut qmp = Qmp::connect(&RunDir(&self.run_dir).qmp_socket(), QMP_TIMEOUT).await?;
        // The default cap is 128 MiB/s; a local file takes whatever the disk gives.
        qmp.execute(
            "migrate-set-parameters",
            Some(serde_json::json!({ "max-bandwidth": 8u64 << 30 })),
        )
        .await?;
        qmp.execute(
            "migrate",
            Some(serde_json::json!({ "uri": format!("exec:cat > {}", shell_quote(&path)) })),
        )
        .await?;
        wait_migration(&mut qmp, "saving the VM state").await
    }

    fn kill(&self) {
        let _ = self.kill.try_send(());
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

/// The last `n` lines of a serial log (read from its last 64 KiB).
pub fn serial_tail(path: &Path, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(accel: Accel) -> VmConfig {
        VmConfig {
            kernel: "/boot/vmlinuz".into(),
            initrd: "/x/initrd".into(),
            rootfs: None,
            disk: None,
            incoming: None,
            volumes: vec![],
            user_net: None,
            tap: None,
            vcpus: 2,
            memory_mib: 256,
            accel,
            hostname: "web1".into(),
            run_dir: "/run/h/vm1".into(),
        }
    }

    #[test]
    fn command_line_follows_the_platform_notes() {
        let a = args(&config(Accel::Tcg)).join(" ");
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
        let k = args(&config(Accel::Kvm)).join(" ");
        assert!(k.contains("-accel kvm -cpu host") && !k.contains("tsc_early_khz"));
    }

    #[test]
    fn disks_are_found_by_serial_and_a_restore_only_adds_incoming() {
        let mut c = config(Accel::Tcg);
        c.rootfs = Some("/img/python,1.ext4".into());
        c.disk = Some("/vms/a/disk.ext4".into());
        let boot = args(&c);
        let a = boot.join(" ");
        assert!(a.contains("file=/img/python,,1.ext4,if=none,id=rootfs,format=raw,readonly=on"));
        assert!(a.contains("virtio-blk-device,drive=rootfs,serial=rootfs"));
        assert!(a.contains("file=/vms/a/disk.ext4,if=none,id=disk,format=raw -device"));
        assert!(a.contains("hearth.rootfs=rootfs hearth.disk=disk"));
        c.incoming = Some("/snap/it's".into());
        let restore = args(&c);
        assert_eq!(&restore[..boot.len()], &boot[..]);
        assert_eq!(
            &restore[boot.len()..],
            ["-incoming", r"exec:cat '/snap/it'\''s/memory.bin'"]
        );
    }
}
