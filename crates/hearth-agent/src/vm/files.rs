//! The files a VM keeps beyond one run: its own disk (`<data dir>/vms/<id>/disk.ext4`,
//! deleted with the VM) and snapshots (`<data dir>/snapshots/<id>/`: the VMM's saved
//! state, in files of its driver's naming; `disk.ext4`, the disk as it was; `meta.json`,
//! what restoring needs).
//! Volumes are `<data dir>/volumes/<id>.ext4`, kept until the manager deletes them.
//! A snapshot is written under a hidden name and renamed into place, so a half-written one
//! is never seen.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_vmm::snapshot::Profile;
use serde::{Deserialize, Serialize};

use super::VmError;

/// How long creating or copying a disk may take.
const DISK_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct Roots {
    pub disks: PathBuf,
    pub snapshots: PathBuf,
    pub volumes: PathBuf,
}

impl Roots {
    pub fn new(data_dir: &Path) -> Roots {
        Roots {
            disks: data_dir.join("vms"),
            snapshots: data_dir.join("snapshots"),
            volumes: data_dir.join("volumes"),
        }
    }

    pub fn volume(&self, id: &str) -> PathBuf {
        self.volumes.join(format!("{id}.ext4"))
    }

    pub fn disk(&self, vm_id: &str) -> PathBuf {
        self.disks.join(vm_id).join("disk.ext4")
    }

    pub fn snapshot(&self, id: &str) -> SnapshotDir {
        SnapshotDir(self.snapshots.join(id))
    }

    /// A snapshot being written: hidden until [`Roots::publish`].
    pub fn partial(&self, id: &str) -> SnapshotDir {
        SnapshotDir(self.snapshots.join(format!(".{id}.partial")))
    }

    pub fn publish(&self, partial: &SnapshotDir, id: &str) -> std::io::Result<()> {
        std::fs::rename(&partial.0, &self.snapshot(id).0)
    }

    /// Allocated bytes of VM disks and of snapshots.
    pub fn usage(&self) -> (u64, u64) {
        (allocated(&self.disks), allocated(&self.snapshots))
    }
}

pub struct SnapshotDir(pub PathBuf);

impl SnapshotDir {
    pub fn disk(&self) -> PathBuf {
        self.0.join("disk.ext4")
    }
    fn meta_path(&self) -> PathBuf {
        self.0.join("meta.json")
    }

    pub fn write_meta(&self, meta: &Meta) -> std::io::Result<()> {
        std::fs::write(self.meta_path(), serde_json::to_vec_pretty(meta)?)
    }

    pub fn read_meta(&self, id: &str) -> Result<Meta, VmError> {
        let bytes =
            std::fs::read(self.meta_path()).map_err(|_| VmError::NoSnapshot(id.to_string()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| VmError::Failed(format!("snapshot {id}'s metadata is unreadable: {e}")))
    }
}

/// What a snapshot was taken of.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub profile: Profile,
    pub vm_id: String,
    pub image: String,
    pub disk_mib: u64,
    pub taken_at_ms: i64,
}

/// Bytes allocated on disk by a file or a tree (sparse files count what they use).
pub fn allocated(path: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if m.is_dir() {
        std::fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| allocated(&e.path())).sum())
            .unwrap_or(0)
    } else {
        m.blocks() * 512
    }
}

async fn run(cmd: &mut tokio::process::Command, what: &str) -> Result<(), VmError> {
    let out = tokio::time::timeout(DISK_TIMEOUT, cmd.kill_on_drop(true).output())
        .await
        .map_err(|_| {
            VmError::Failed(format!(
                "{what} took longer than {} s",
                DISK_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| VmError::Failed(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(VmError::Failed(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Creates `dir` (and its parents) readable by the agent only: disks and saved guest
/// memory hold the guests' data and secrets.
pub fn private_dir(dir: &Path) -> Result<(), VmError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| VmError::Failed(format!("creating {}: {e}", dir.display())))
}

/// Makes the file at `path` by running `make` on a temporary name beside it, then renaming:
/// `path` is either whole or absent, never half-written.
async fn make_file(
    path: &Path,
    what: &str,
    make: impl FnOnce(&Path) -> tokio::process::Command,
) -> Result<(), VmError> {
    private_dir(path.parent().expect("a disk path has a parent"))?;
    let tmp = path.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    if let Err(e) = run(&mut make(&tmp), what).await {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| VmError::Failed(format!("placing the disk: {e}")))
}

/// Creates an empty ext4 disk of `mib` MiB at `path` (a sparse file) unless one is there.
pub async fn ensure_disk(path: &Path, mib: u64) -> Result<(), VmError> {
    if path.is_file() {
        return Ok(());
    }
    make_file(path, "creating the disk (mkfs.ext4)", |tmp| {
        let mut c = tokio::process::Command::new("mkfs.ext4");
        c.args(["-q", "-F", "-L", "hearth-disk", "-E"])
            .arg("lazy_itable_init=1,lazy_journal_init=1")
            .arg(tmp)
            .arg(format!("{mib}M"));
        c
    })
    .await
}

/// Grows the ext4 file at `path` to `mib` MiB (never shrinks it).
pub async fn grow_disk(path: &Path, mib: u64) -> Result<(), VmError> {
    let want = mib << 20;
    let have = std::fs::metadata(path)
        .map_err(|e| VmError::Failed(format!("{}: {e}", path.display())))?
        .len();
    if have >= want {
        return Ok(());
    }
    run(
        tokio::process::Command::new("resize2fs")
            .arg("-f")
            .arg(path)
            .arg(format!("{mib}M")),
        "growing the disk (resize2fs)",
    )
    .await
}

/// Copies a disk keeping its holes (a reflink where the file system can).
pub async fn copy_disk(from: &Path, to: &Path) -> Result<(), VmError> {
    make_file(to, "copying the disk", |tmp| {
        let mut c = tokio::process::Command::new("cp");
        c.args(["--sparse=always", "--reflink=auto"])
            .arg(from)
            .arg(tmp);
        c
    })
    .await
}
