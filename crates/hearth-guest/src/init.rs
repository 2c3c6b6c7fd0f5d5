//! PID 1 duties: mounts, modules, hostname, and the switch to a root filesystem.
//!
//! With `hearth.rootfs=DEV` on the kernel command line (a runtime or Debian image), DEV is
//! mounted read-only under a tmpfs overlay and becomes `/`: the guest agent keeps running as
//! PID 1, and everything it starts sees that filesystem, writable, with the base untouched.

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
    let _ = std::process::Command::new("/bin/ip")
        .args(["link", "set", "lo", "up"])
        .status();
    if let Some(dev) = cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("hearth.rootfs="))
    {
        match switch_root(dev) {
            Ok(()) => crate::log(&format!(
                "root filesystem: {dev} (read-only, tmpfs overlay)"
            )),
            Err(e) => crate::log(&format!("staying in the initramfs: {e}")),
        }
    }
}

/// Makes `dev` (ext4) the root, under a tmpfs overlay, and moves the pseudo filesystems
/// into it.
fn switch_root(dev: &str) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !Path::new(dev).exists() {
        if std::time::Instant::now() > deadline {
            return Err(format!("{dev} did not appear"));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let m = |src: &str, target: &str, fstype: Option<&str>, flags: MsFlags, data: Option<&str>| {
        let _ = std::fs::create_dir_all(target);
        mount(Some(src), target, fstype, flags, data).map_err(|e| format!("mount {target}: {e}"))
    };
    m(dev, "/mnt/lower", Some("ext4"), MsFlags::MS_RDONLY, None)?;
    m(
        "tmpfs",
        "/mnt/rw",
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )?;
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
