//! The `default` image: the host's guest kernel (Debian's cloud kernel) and an initramfs with
//! `hearth-guest` as `/init`, busybox, and the virtio modules the guest needs, in load order.
//!
//! Built in well under a second and cached: the file name carries a hash of the guest binary,
//! busybox, the kernel version and the module list, so a change to any rebuilds it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use super::cpio::CpioWriter;

/// Modules the guest loads, in order (the Debian cloud kernel builds these as modules).
pub const GUEST_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_balloon",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    "virtio_console",
    "virtio-rng",
    "overlay",
];

#[derive(Debug, Clone)]
pub struct BootImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub kernel_version: String,
    /// The root filesystem the guest switches to (runtime images); none for `default`.
    pub rootfs: Option<PathBuf>,
    /// What the guest runs at every boot (an imported container image's entrypoint).
    pub run: Option<super::oci::ImageRun>,
}

/// Where the static `hearth-guest` binary is: `HEARTH_GUEST_BIN`, else beside this
/// executable, else the workspace's musl build output. Only a static executable qualifies:
/// a dynamically linked one fails in the guest with nothing but "Failed to execute /init".
pub fn guest_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("HEARTH_GUEST_BIN") {
        let p = PathBuf::from(p);
        anyhow::ensure!(
            p.is_file(),
            "HEARTH_GUEST_BIN={} does not exist",
            p.display()
        );
        anyhow::ensure!(
            is_static_elf(&p),
            "HEARTH_GUEST_BIN={} is not a static executable: build it for x86_64-unknown-linux-musl",
            p.display()
        );
        return Ok(p);
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("hearth-guest"));
        }
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/x86_64-unknown-linux-musl");
    candidates.push(ws.join("release/hearth-guest"));
    candidates.push(ws.join("debug/hearth-guest"));
    candidates.into_iter().find(|p| is_static_elf(p)).context(
        "hearth-guest is not built: run `cargo build --release --target x86_64-unknown-linux-musl -p hearth-guest` \
         (make up does) or set HEARTH_GUEST_BIN",
    )
}

/// Whether `path` is an ELF64 executable without a program interpreter (statically linked).
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // ELF magic, 64-bit, little-endian.
    if data.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..usize::from(phnum)).all(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        u32_at(at).is_some_and(|t| t != PT_INTERP)
    })
}

/// The newest Debian cloud kernel installed on this host, with its version.
pub fn host_kernel() -> anyhow::Result<(PathBuf, String)> {
    let mut found: Vec<(PathBuf, String)> = std::fs::read_dir("/boot")
        .context("reading /boot")?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let ver = name.strip_prefix("vmlinuz-")?.to_string();
            Path::new("/lib/modules")
                .join(&ver)
                .is_dir()
                .then(|| (e.path(), ver))
        })
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    found
        .into_iter()
        .rev()
        .find(|(_, v)| v.ends_with("-cloud-amd64"))
        .context("no guest kernel: install linux-image-cloud-amd64 (scripts/setup.sh does)")
}

fn find_module(kver: &str, name: &str) -> anyhow::Result<PathBuf> {
    let out = Command::new("modinfo")
        .args(["-k", kver, "-n", name])
        .output();
    if let Ok(o) = out {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if o.status.success() && p.is_file() {
            return Ok(p);
        }
    }
    bail!("kernel module {name} for {kver} not found")
}

fn busybox() -> anyhow::Result<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("busybox is missing: install busybox-static (scripts/setup.sh does)")
}

/// Builds (or finds in the cache) the default image under `images_dir`.
pub fn build_default(images_dir: &Path) -> anyhow::Result<BootImage> {
    let (kernel, kver) = host_kernel()?;
    let guest = std::fs::read(guest_binary()?).context("reading hearth-guest")?;
    let bb_path = busybox()?;
    let bb = std::fs::read(&bb_path)?;
    let modules: Vec<(String, Vec<u8>)> = GUEST_MODULES
        .iter()
        .map(|m| {
            let p = find_module(&kver, m)?;
            let file = p
                .file_name()
                .and_then(|f| f.to_str())
                .context("module file name")?
                .to_string();
            anyhow::ensure!(
                file.ends_with(".ko"),
                "module {m} is compressed ({file}); Hearth loads plain .ko files"
            );
            Ok((file, std::fs::read(&p)?))
        })
        .collect::<anyhow::Result<_>>()?;

    let mut h = Sha256::new();
    h.update(&guest);
    h.update(&bb);
    h.update(kver.as_bytes());
    for (name, data) in &modules {
        h.update(name.as_bytes());
        h.update((data.len() as u64).to_le_bytes());
    }
    let key = hex::encode(&h.finalize()[..8]);
    let dir = images_dir.join("default");
    std::fs::create_dir_all(&dir)?;
    let initrd = dir.join(format!("initramfs-{key}.cpio"));
    if !initrd.is_file() {
        let applets = Command::new(&bb_path)
            .arg("--list-full")
            .output()
            .context("listing busybox applets")?;
        // Unique per builder: agents sharing an images dir may build at once.
        let tmp = initrd.with_extension(format!(
            "tmp.{}.{}",
            std::process::id(),
            crate::identity::random_token(4)
        ));
        let mut w = CpioWriter::new(std::io::BufWriter::new(std::fs::File::create(&tmp)?));
        for d in [
            "bin",
            "sbin",
            "usr",
            "usr/bin",
            "usr/sbin",
            "etc",
            "etc/hearth",
            "lib",
            "lib/modules",
            "lib/modules/hearth",
            "proc",
            "sys",
            "dev",
            "run",
            "tmp",
            "root",
            "var",
            "var/tmp",
            "mnt",
        ] {
            w.dir(d)?;
        }
        w.char_dev("dev/console", 0o600, 5, 1)?;
        w.char_dev("dev/null", 0o666, 1, 3)?;
        w.file("init", 0o755, &guest)?;
        w.file("bin/busybox", 0o755, &bb)?;
        for applet in String::from_utf8_lossy(&applets.stdout).lines() {
            let applet = applet.trim();
            if applet.is_empty() || applet == "bin/busybox" || applet == "linuxrc" {
                continue;
            }
            w.symlink(applet, "/bin/busybox")?;
        }
        let mut list = String::new();
        for (name, data) in &modules {
            w.file(&format!("lib/modules/hearth/{name}"), 0o644, data)?;
            list.push_str(name);
            list.push('\n');
        }
        w.file("etc/hearth/modules", 0o644, list.as_bytes())?;
        w.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
        w.file("etc/group", 0o644, b"root:x:0:\ntty:x:5:\n")?;
        w.finish()?;
        std::fs::rename(&tmp, &initrd)?;
    }
    Ok(BootImage {
        kernel,
        initrd,
        kernel_version: kver,
        rootfs: None,
        run: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_static_from_dynamic_executables() {
        // This test binary is dynamically linked against glibc.
        assert!(!is_static_elf(&std::env::current_exe().unwrap()));
        assert!(!is_static_elf(Path::new("/etc/passwd")));
        if let Ok(g) = guest_binary() {
            assert!(is_static_elf(&g));
        }
    }
}
