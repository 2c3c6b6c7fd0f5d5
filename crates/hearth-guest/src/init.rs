//! PID 1 duties: mounts, modules, hostname, and the switch to a root filesystem.
//!
//! With `hearth.rootfs=SERIAL` and/or `hearth.disk=SERIAL` on the kernel command line, `/`
//! becomes an overlay of a read-only base (the image, or the initramfs) and a writable upper
//! layer (the VM's disk, or memory): the guest agent keeps running as PID 1, and everything
//! it starts sees that filesystem, writable, with the base untouched. `/tmp` stays in memory.

use std::path::Path;

use nix::mount::{mount, MsFlags};

fn mnt(src: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) {
    let _ = std::fs::create_dir_all(target);
    if let Err(e) = mount(Some(src), target, Some(fstype), flags, data) {
        crate::log(&format!("mount {target}: {e}"));
    }
}

pub fn as_pid1() {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt("proc", "/proc", "proc", nosuid, None);
    mnt("sysfs", "/sys", "sysfs", nosuid, None);
    mnt(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    );
    mnt(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("gid=5,mode=620,ptmxmode=666"),
    );
    mnt("tmpfs", "/dev/shm", "tmpfs", nosuid, Some("mode=1777"));
    mnt(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    );
    mnt(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    );
    let _ = std::os::unix::fs::symlink("/proc/self/fd", "/dev/fd");
    load_modules();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let hostname = cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("hearth.hostname="))
        .unwrap_or("hearth");
    if let Err(e) = nix::unistd::sethostname(hostname) {
        crate::log(&format!("sethostname: {e}"));
    }
    // Bring loopback up so guest programs can use 127.0.0.1.
    if !ip(&["link", "set", "lo", "up"]) {
        crate::log("network: could not bring lo up");
    }
    let arg = |key: &str| {
        cmdline
            .split_whitespace()
            .find_map(|a| a.strip_prefix(key))
            .map(str::to_string)
    };
    // User-mode networking: QEMU's fixed addresses. Configured with the initramfs's `ip`
    // (a runtime image may have none); DNS after the switch, in the new root.
    // A managed network: the address, gateway and name servers the host gave.
    let user_net = arg("hearth.net=").as_deref() == Some("user");
    let (address, gateway, dns) = if user_net {
        (
            Some("10.0.2.15/24".to_string()),
            Some("10.0.2.2".to_string()),
            "10.0.2.3".to_string(),
        )
    } else {
        (
            arg("hearth.ip="),
            arg("hearth.gw="),
            arg("hearth.dns=").unwrap_or_default(),
        )
    };
    if let Some(address) = &address {
        for args in eth0_steps(address, gateway.as_deref()) {
            if !ip(&args) {
                crate::log(&format!("network: ip {} failed", args.join(" ")));
            }
        }
    }
    let rootfs = arg("hearth.rootfs=");
    let disk = arg("hearth.disk=");
    if address.is_some() {
        keep_busybox();
    }
    if rootfs.is_some() || disk.is_some() {
        match switch_root(rootfs.as_deref(), disk.as_deref()) {
            Ok(what) => crate::log(&format!("root filesystem: {what}")),
            Err(e) => crate::log(&format!("staying in the initramfs: {e}")),
        }
    }
    if !dns.is_empty() {
        write_resolv_conf(dns.split(','));
    }
    // Volumes: `NAME:SERIAL,…`, each an ext4 mounted at /volumes/NAME.
    for entry in arg("hearth.volumes=").unwrap_or_default().split(',') {
        let Some((name, serial)) = entry.split_once(':') else {
            continue;
        };
        let target = format!("/volumes/{name}");
        match disk_by_serial(serial) {
            Ok(dev) => mnt(&dev, &target, "ext4", MsFlags::MS_NOATIME, None),
            Err(e) => crate::log(&format!("volume {name}: {e}")),
        }
    }
}

/// Runs the initramfs's busybox `ip` with `args`; whether it succeeded.
fn ip(args: &[&str]) -> bool {
    // After the switch to a root filesystem without `ip`, the initramfs's busybox is kept
    // in /run (see `keep_busybox`).
    let (program, lead): (&str, &[&str]) = if std::path::Path::new(KEPT_BUSYBOX).exists() {
        (KEPT_BUSYBOX, &["ip"])
    } else {
        ("/sbin/ip", &[])
    };
    crate::reaper::run(std::process::Command::new(program).args(lead).args(args))
}

/// The `ip` steps that bring eth0 up with `address` (with its prefix) and, given one, a
/// default route via `gateway`.
fn eth0_steps<'a>(address: &'a str, gateway: Option<&'a str>) -> Vec<Vec<&'a str>> {
    let mut steps = vec![
        vec!["link", "set", "eth0", "up"],
        vec!["addr", "add", address, "dev", "eth0"],
    ];
    if let Some(gw) = gateway {
        steps.push(vec!["route", "add", "default", "via", gw]);
    }
    steps
}

fn write_resolv_conf<'a>(servers: impl Iterator<Item = &'a str>) {
    let conf: String = servers.map(|d| format!("nameserver {d}\n")).collect();
    let _ = std::fs::write("/etc/resolv.conf", conf);
}

/// Where the initramfs's busybox is kept across the switch to another root.
const KEPT_BUSYBOX: &str = "/run/hearth/busybox";

/// Copies the initramfs's busybox to /run (which moves into the new root), so the guest
/// can still configure its NIC after switching to a root filesystem that has no `ip`.
fn keep_busybox() {
    let _ = std::fs::create_dir_all("/run/hearth");
    if let Err(e) = std::fs::copy("/bin/busybox", KEPT_BUSYBOX) {
        crate::log(&format!("keeping busybox: {e}"));
    }
}

/// The block device whose virtio serial number is `serial` or, when it is a path
/// (`/dev/vdb`: a VMM whose disks have no serial names them by order), that device;
/// waiting (bounded) for it.
fn disk_by_serial(serial: &str) -> Result<String, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if serial.starts_with("/dev/") && std::path::Path::new(serial).exists() {
            return Ok(serial.to_string());
        }
        if let Ok(entries) = std::fs::read_dir("/sys/block") {
            for e in entries.flatten() {
                let s = std::fs::read_to_string(e.path().join("serial")).unwrap_or_default();
                if s.trim() == serial {
                    return Ok(format!("/dev/{}", e.file_name().to_string_lossy()));
                }
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("no disk with serial {serial} appeared"));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Makes an overlay the root and moves the pseudo filesystems into it. Its lower layer is
/// the read-only image with serial `rootfs` (a runtime or Debian image), or the initramfs
/// itself; its upper layer is the VM's own disk (serial `disk`, ext4) when it has one, so
/// changes survive a restart and go into snapshots, and guest memory otherwise.
fn switch_root(rootfs: Option<&str>, disk: Option<&str>) -> Result<String, String> {
    let m = |src: &str, target: &str, fstype: Option<&str>, flags: MsFlags, data: Option<&str>| {
        let _ = std::fs::create_dir_all(target);
        mount(Some(src), target, fstype, flags, data).map_err(|e| format!("mount {target}: {e}"))
    };
    let lower = match rootfs {
        Some(serial) => {
            let dev = disk_by_serial(serial)?;
            m(&dev, "/mnt/lower", Some("ext4"), MsFlags::MS_RDONLY, None)?;
            format!("{dev} (read-only)")
        }
        None => {
            m("/", "/mnt/lower", None, MsFlags::MS_BIND, None)?;
            "the initramfs".to_string()
        }
    };
    let upper = match disk {
        Some(serial) => {
            let dev = disk_by_serial(serial)?;
            m(&dev, "/mnt/rw", Some("ext4"), MsFlags::MS_NOATIME, None)?;
            dev
        }
        None => {
            m(
                "tmpfs",
                "/mnt/rw",
                Some("tmpfs"),
                MsFlags::empty(),
                Some("mode=0755"),
            )?;
            "memory".to_string()
        }
    };
    for d in ["/mnt/rw/upper", "/mnt/rw/work"] {
        std::fs::create_dir_all(d).map_err(|e| format!("{d}: {e}"))?;
    }
    m(
        "overlay",
        "/newroot",
        Some("overlay"),
        MsFlags::empty(),
        Some("lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work"),
    )?;
    for d in ["/proc", "/sys", "/dev", "/run", "/tmp"] {
        m(d, &format!("/newroot{d}"), None, MsFlags::MS_MOVE, None)?;
    }
    std::env::set_current_dir("/newroot").map_err(|e| format!("chdir: {e}"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("moving the new root: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir: {e}"))?;
    Ok(format!("{lower}, changes on {upper}"))
}

/// Takes on a restored clone's identity: its hostname, fresh randomness, the current time.
/// Each restore is counted in `/run/hearth/restored` ("COUNT HOSTNAME").
pub fn restored(
    hostname: &str,
    entropy: &[u8],
    now_ms: i64,
    net: Option<&hearth_guest_proto::msg::NetConfig>,
) -> Result<(), String> {
    use std::io::Write;
    nix::unistd::sethostname(hostname).map_err(|e| format!("sethostname: {e}"))?;
    if let Some(n) = net {
        // The clone's own MAC and address, replacing the saved VM's.
        let mut steps = vec![
            vec!["link", "set", "eth0", "down"],
            vec!["link", "set", "eth0", "address", n.mac.as_str()],
            vec!["addr", "flush", "dev", "eth0"],
        ];
        steps.extend(eth0_steps(&n.address, n.gateway.as_deref()));
        for args in steps {
            if !ip(&args) {
                return Err(format!("network: ip {} failed", args.join(" ")));
            }
        }
        if !n.dns.is_empty() {
            write_resolv_conf(n.dns.iter().map(String::as_str));
        }
    }
    let mut rng = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    rng.write_all(entropy)
        .map_err(|e| format!("writing entropy: {e}"))?;
    // RNDRESEEDCRNG: make the kernel's generator use what was just mixed in, now.
    nix::ioctl_none!(reseed_crng, b'R', 0x07);
    // SAFETY: an argument-less ioctl on an open /dev/urandom.
    if let Err(e) = unsafe { reseed_crng(std::os::fd::AsRawFd::as_raw_fd(&rng)) } {
        crate::log(&format!("reseeding the RNG: {e}"));
    }
    let ts =
        nix::sys::time::TimeSpec::new(now_ms.div_euclid(1000), now_ms.rem_euclid(1000) * 1_000_000);
    if let Err(e) = nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts) {
        crate::log(&format!("setting the clock: {e}"));
    }
    let path = "/run/hearth/restored";
    let count = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let _ = std::fs::create_dir_all("/run/hearth");
    std::fs::write(path, format!("{count} {hostname}\n")).map_err(|e| format!("{path}: {e}"))?;
    crate::log(&format!(
        "restored from a snapshot as {hostname} (restore {count})"
    ));
    Ok(())
}

/// Loads each module named in /etc/hearth/modules (one file name per line, in order) from
/// /lib/modules/hearth/.
fn load_modules() {
    let Ok(list) = std::fs::read_to_string("/etc/hearth/modules") else {
        return;
    };
    for name in list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let path = Path::new("/lib/modules/hearth").join(name);
        let res = match std::fs::File::open(&path) {
            Ok(f) => nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty()),
            Err(e) => Err(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
        };
        match res {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => crate::log(&format!("loading {name}: {e}")),
        }
    }
}
