//! Runtime root filesystems: a minimal Debian (`debootstrap --variant=minbase`) with the
//! runtime's packages and its shim under `/opt/hearth/`, packed into a read-only ext4 image
//! (`mkfs.ext4 -d`, no mounting). VMs boot the default kernel and initramfs and switch to it
//! (see the guest's `init`).
//!
//! An image is named by a hash of its recipe (release, packages, shim), so a change rebuilds
//! it and an unchanged one is found again after a restart. Downloaded packages are kept in a
//! cache beside the images; one lock file serialises the builds of every agent that shares
//! an images directory, so each image is built once and the cache has one writer.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hearth_types::runtime::{Runtime, SUITE};
use sha2::{Digest, Sha256};

/// Bumped when the way images are put together changes.
const RECIPE: &str = "hearth-rootfs-1";
/// The longest a build may take (downloads included).
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The shim a runtime's image carries: its file name under `/opt/hearth/` and its source.
pub fn shim(runtime: &str) -> Option<(&'static str, &'static str)> {
    Some(match runtime {
        "python" => ("shim.py", include_str!("../../runtimes/shim.py")),
        "node" => ("shim.js", include_str!("../../runtimes/shim.js")),
        "ruby" => ("shim.rb", include_str!("../../runtimes/shim.rb")),
        "php" => ("shim.php", include_str!("../../runtimes/shim.php")),
        "perl" => ("shim.pl", include_str!("../../runtimes/shim.pl")),
        "lua" => ("shim.lua", include_str!("../../runtimes/shim.lua")),
        "bash" => ("shim.sh", include_str!("../../runtimes/shim.sh")),
        _ => return None,
    })
}

/// Where the image for `rt`'s current recipe is (whether or not it is built).
pub fn image_path(images_dir: &Path, rt: &Runtime) -> anyhow::Result<PathBuf> {
    let (file, source) = match shim(rt.name) {
        Some(s) => s,
        None if rt.compiled => ("", ""), // its shim is compiled into the code
        None => anyhow::bail!("no shim for {}", rt.name),
    };
    let mut h = Sha256::new();
    for part in [RECIPE, SUITE, file, source] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for p in rt.packages {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let key = hex::encode(&h.finalize()[..8]);
    Ok(images_dir
        .join("runtimes")
        .join(format!("{}-{key}.ext4", rt.name)))
}

/// The Debian mirror this host's apt uses (`HEARTH_DEBIAN_MIRROR` overrides it).
pub fn debian_mirror() -> String {
    if let Ok(m) = std::env::var("HEARTH_DEBIAN_MIRROR") {
        return m;
    }
    let deb822 =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    for stanza in deb822.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        if field("Suites:").is_some_and(|s| s.split_whitespace().any(|s| s == SUITE)) {
            if let Some(uri) =
                field("URIs:").and_then(|u| u.split_whitespace().next().map(String::from))
            {
                return uri;
            }
        }
    }
    let list = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    for l in list.lines() {
        let parts: Vec<&str> = l.split_whitespace().collect();
        if parts.len() >= 3 && parts[0] == "deb" && parts[2] == SUITE {
            return parts[1].to_string();
        }
    }
    "http://deb.debian.org/debian".into()
}

/// Builds `rt`'s image unless it exists; `progress` gets a line for each step. Blocking.
pub fn build(
    images_dir: &Path,
    rt: &Runtime,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<PathBuf> {
    let image = image_path(images_dir, rt)?;
    let dir = image.parent().expect("under runtimes/").to_path_buf();
    let _lock = lock_builds(images_dir, progress)?;
    if image.is_file() {
        return Ok(image);
    }
    let work = dir.join(format!(".build-{}-{}", rt.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let result = build_in(images_dir, &work, &image, rt, progress);
    let _ = std::fs::remove_dir_all(&work);
    result.map(|()| image)
}

/// Takes the images directory's build lock (held until dropped): builds share one package
/// cache, which has one writer.
pub fn lock_builds(
    images_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let dir = images_dir.join("runtimes");
    std::fs::create_dir_all(&dir)?;
    let lock = std::fs::File::create(dir.join("build.lock"))?;
    progress("waiting for other builds in this images directory");
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("locking the images directory: {e}"))
}

/// Whether `p` can be a Debian package name.
pub fn is_package_name(p: &str) -> bool {
    (2..=64).contains(&p.len())
        && p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// A minimal Debian with `packages` in `root` (`debootstrap --variant=minbase`), its apt
/// caches and documentation trimmed. Call with the build lock held.
pub fn debootstrap(
    images_dir: &Path,
    root: &Path,
    packages: &[&str],
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    for tool in ["debootstrap", "mkfs.ext4"] {
        if which(tool).is_none() {
            bail!("{tool} is missing: install debootstrap and e2fsprogs (scripts/setup.sh does)");
        }
    }
    if let Some(bad) = packages.iter().find(|p| !is_package_name(p)) {
        bail!("{bad:?} is not a Debian package name");
    }
    let cache = images_dir.join("runtimes").join("debs");
    std::fs::create_dir_all(root)?;
    std::fs::create_dir_all(&cache)?;
    let mirror = debian_mirror();
    progress(&format!(
        "debootstrap {SUITE} with {} from {mirror}",
        if packages.is_empty() {
            "no extra packages".to_string()
        } else {
            packages.join(", ")
        }
    ));
    let mut cmd = Command::new(which("debootstrap").expect("checked"));
    cmd.arg("--variant=minbase");
    if !packages.is_empty() {
        cmd.arg(format!("--include={}", packages.join(",")));
    }
    cmd.arg(format!("--cache-dir={}", cache.display()))
        .arg(SUITE)
        .arg(root)
        .arg(&mirror);
    run_with_progress(cmd, progress).context("debootstrap failed")?;

    progress("trimming caches and documentation");
    for d in [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
    ] {
        let p = root.join(d);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
    }
    std::fs::write(root.join("etc/hostname"), "hearth\n")?;
    Ok(())
}

fn build_in(
    images_dir: &Path,
    work: &Path,
    image: &Path,
    rt: &Runtime,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    let root = work.join("root");
    debootstrap(images_dir, &root, rt.packages, progress)?;
    std::fs::create_dir_all(root.join("opt/hearth"))?;
    if let Some((file, source)) = shim(rt.name) {
        std::fs::write(root.join("opt/hearth").join(file), source)?;
    }
    std::fs::create_dir_all(root.join("code"))?;

    let tmp = work.join("image.ext4");
    pack_ext4(&root, &tmp, progress)?;
    std::fs::rename(&tmp, image)?;
    progress("done");
    Ok(())
}

/// Packs the directory `root` into a new ext4 image `out` a quarter larger than its content
/// (no mounting: `mkfs.ext4 -d`).
pub fn pack_ext4(root: &Path, out: &Path, progress: &mut dyn FnMut(&str)) -> anyhow::Result<()> {
    let used = du(root)?;
    let size_mib = used / (1 << 20) * 5 / 4 + 64;
    progress(&format!(
        "packing {} MiB into a {size_mib} MiB ext4 image",
        used >> 20
    ));
    let mkfs = which("mkfs.ext4").context("mkfs.ext4 is missing: install e2fsprogs")?;
    let res = Command::new(mkfs)
        .args(["-q", "-F", "-L", "hearth-rootfs", "-m", "0", "-d"])
        .arg(root)
        .arg(out)
        .arg(format!("{size_mib}M"))
        .output()
        .context("running mkfs.ext4")?;
    if !res.status.success() {
        bail!("mkfs.ext4: {}", String::from_utf8_lossy(&res.stderr).trim());
    }
    Ok(())
}

/// Runs `cmd`, passing each line of its output to `progress`, within [`BUILD_TIMEOUT`].
fn run_with_progress(mut cmd: Command, progress: &mut dyn FnMut(&str)) -> anyhow::Result<()> {
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().expect("piped");
    let errs = std::thread::spawn(move || {
        let mut tail = std::collections::VecDeque::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tail.len() == 20 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        tail.into_iter().collect::<Vec<_>>().join("\n")
    });
    // The child is reaped only after this thread is told it ended, so the group it leads
    // cannot have been reused when it is killed.
    let started = Instant::now();
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let (ended, watch) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watch.recv_timeout(BUILD_TIMEOUT) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let mut last = String::new();
    for line in BufReader::new(child.stdout.take().expect("piped"))
        .lines()
        .map_while(Result::ok)
    {
        progress(line.trim_start_matches("I: "));
        last = line;
    }
    let status = child.wait();
    let _ = ended.send(());
    let _ = watchdog.join();
    let status = status?;
    let errs = errs.join().unwrap_or_default();
    if !status.success() {
        if started.elapsed() >= BUILD_TIMEOUT {
            bail!("it took longer than {} s", BUILD_TIMEOUT.as_secs());
        }
        bail!("{status}: {last}\n{errs}");
    }
    Ok(())
}

fn du(root: &Path) -> anyhow::Result<u64> {
    let out = Command::new("du")
        .args(["-sb"])
        .arg(root)
        .output()
        .context("running du")?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("du printed no size")
}

fn which(tool: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_types::runtime::{RuntimeKind, RUNTIMES};

    #[test]
    fn every_image_runtime_has_a_shim_and_a_stable_image_name() {
        let dir = Path::new("/x");
        for rt in RUNTIMES.iter().filter(|r| r.kind == RuntimeKind::Image) {
            match shim(rt.name) {
                Some((file, _)) => assert!(
                    rt.command.iter().any(|a| a.ends_with(file)),
                    "{} starts its shim",
                    rt.name
                ),
                None => assert!(rt.compiled, "{} has no shim", rt.name),
            }
            let p = image_path(dir, rt).unwrap();
            assert_eq!(p, image_path(dir, rt).unwrap());
            assert!(p.starts_with("/x/runtimes"));
        }
    }

    #[test]
    fn the_mirror_is_a_url() {
        assert!(debian_mirror().starts_with("http"));
    }
}
