//! PID 1 duties: mounts, modules, hostname.

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
