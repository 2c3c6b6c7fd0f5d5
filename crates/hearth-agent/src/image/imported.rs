//! Images users upload: each is `<data dir>/imported-images/<name>/` holding `image.json`
//! and one part: `rootfs.ext4` (from a tar, an OCI image or an ext4 file; booted with the
//! default kernel and initramfs like a runtime image, and running what `image.json` says
//! at boot), or its own `kernel` or `initrd` (booted with the default's other part; an
//! initramfs must start `hearth-guest` as its init). They are found again when the agent
//! restarts.
//!
//! An import unpacks into a work dir beside them and is renamed into place at the end, so
//! a failed or interrupted one leaves nothing an agent would load.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::oci::{self, Format, ImageRun};
use super::{BootImage, Images};

/// What an upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    /// A tree to unpack into an ext4 root filesystem.
    Tree(Format),
    /// One part of an image, as a file.
    File(Part),
}

impl std::str::FromStr for Upload {
    type Err = String;
    fn from_str(s: &str) -> Result<Upload, String> {
        match s {
            "kernel" => Ok(Upload::File(Part::Kernel)),
            "initrd" => Ok(Upload::File(Part::Initrd)),
            "ext4" => Ok(Upload::File(Part::Rootfs)),
            _ => s.parse().map(Upload::Tree).map_err(|_| {
                format!("format must be oci, rootfs-tar, ext4, kernel or initrd, got {s:?}")
            }),
        }
    }
}

/// The part of an image a file upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Kernel,
    Initrd,
    Rootfs,
}

impl Part {
    fn file_name(self) -> &'static str {
        match self {
            Part::Kernel => "kernel",
            Part::Initrd => "initrd",
            Part::Rootfs => "rootfs.ext4",
        }
    }

    /// Whether the file at `path` looks like this part (by its first bytes), or why not.
    pub fn check_file(self, path: &Path) -> anyhow::Result<()> {
        use std::io::Read;
        let mut head = Vec::new();
        std::fs::File::open(path)
            .with_context(|| format!("opening {}", path.display()))?
            .take(2048)
            .read_to_end(&mut head)?;
        self.check(&head).map_err(anyhow::Error::msg)
    }

    /// Whether `head` (a file's first 2 KiB) looks like this part, or why not.
    fn check(self, head: &[u8]) -> Result<(), String> {
        let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
        let ok = match self {
            // A bzImage's setup header ("HdrS"), or an ELF vmlinux.
            Part::Kernel => at(0x202, b"HdrS") || at(0, b"\x7fELF"),
            // A newc cpio, or one compressed with gzip, zstd, xz or lz4.
            Part::Initrd => {
                at(0, b"070701")
                    || at(0, b"070702")
                    || at(0, &[0x1f, 0x8b])
                    || at(0, &[0x28, 0xb5, 0x2f, 0xfd])
                    || at(0, &[0xfd, b'7', b'z', b'X', b'Z'])
                    || at(0, &[0x02, 0x21, 0x4c, 0x18])
            }
            // The ext2/3/4 superblock magic.
            Part::Rootfs => at(1080, &[0x53, 0xef]),
        };
        if ok {
            return Ok(());
        }
        Err(match self {
            Part::Kernel => "this is not a Linux kernel (a bzImage or an ELF vmlinux)",
            Part::Initrd => "this is not an initramfs (a cpio archive, plain or compressed)",
            Part::Rootfs => "this is not an ext4 file system image",
        }
        .into())
    }

    /// The default image with this part replaced by `path`.
    fn boot(self, base: BootImage, path: std::path::PathBuf) -> BootImage {
        match self {
            Part::Kernel => BootImage {
                kernel: path,
                ..base
            },
            Part::Initrd => BootImage {
                initrd: path,
                ..base
            },
            Part::Rootfs => BootImage {
                rootfs: Some(path),
                run: Some(ImageRun::default()),
                ..base
            },
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    run: ImageRun,
    /// The upload's SHA-256 (an import).
    #[serde(default)]
    sha256: String,
    /// The Debian packages it was built with (a build).
    #[serde(default)]
    packages: Option<Vec<String>>,
    /// The part this image has of its own, when it is not a root filesystem.
    #[serde(default)]
    part: Option<Part>,
}

fn check(name: &str) -> anyhow::Result<()> {
    hearth_types::vm::check_user_image_name(name).map_err(anyhow::Error::msg)
}

/// Unpacks `upload` into an ext4 root filesystem named `name` (replacing an older one of
/// that name) and registers it. Blocking: run it off the async threads.
pub fn import(
    upload: &Path,
    kind: Upload,
    name: &str,
    sha256: &str,
    dir: &Path,
    images: &Images,
) -> anyhow::Result<BootImage> {
    check(name)?;
    let format = match kind {
        Upload::Tree(format) => format,
        Upload::File(part) => return install_part(upload, part, name, sha256, dir, images),
    };
    install(dir, name, images, &mut |_| {}, |work, tree, _| {
        let run = oci::unpack(upload, format, &work.join("scratch"), tree)?;
        Ok(Meta {
            run,
            sha256: sha256.to_string(),
            packages: None,
            part: None,
        })
    })
}

/// Makes the image `name` from one uploaded part (moved into place) and the default
/// image's other parts.
fn install_part(
    upload: &Path,
    part: Part,
    name: &str,
    sha256: &str,
    dir: &Path,
    images: &Images,
) -> anyhow::Result<BootImage> {
    let base = images
        .get("default")
        .context("this host has no default image to take the other parts from")?;
    part.check_file(upload)?;
    let work = dir.join(format!(".work-{name}-{}", hearth_types::short_suffix()));
    let res = (|| {
        std::fs::create_dir_all(&work)?;
        std::fs::rename(upload, work.join(part.file_name()))?;
        let meta = Meta {
            run: ImageRun::default(),
            sha256: sha256.to_string(),
            packages: None,
            part: Some(part),
        };
        std::fs::write(work.join("image.json"), serde_json::to_vec_pretty(&meta)?)?;
        replace(dir, name, &work)
    })();
    let _ = std::fs::remove_dir_all(&work);
    res?;
    let image = part.boot(base, dir.join(name).join(part.file_name()));
    images.insert(name, image.clone());
    Ok(image)
}

/// Renames the finished image dir `made` to `name`'s place, replacing an older one.
fn replace(dir: &Path, name: &str, made: &Path) -> anyhow::Result<()> {
    let target = dir.join(name);
    let old = dir.join(format!(".old-{name}-{}", hearth_types::short_suffix()));
    if target.exists() {
        std::fs::rename(&target, &old)?;
    }
    std::fs::rename(made, &target)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// The packages an image of this name was built with, if it was built.
pub fn built_with(dir: &Path, name: &str) -> Option<Vec<String>> {
    let meta: Meta =
        serde_json::from_slice(&std::fs::read(dir.join(name).join("image.json")).ok()?).ok()?;
    meta.packages
}

/// Builds a minimal Debian with `packages` as the image `name` (see
/// [`super::rootfs::debootstrap`]). Blocking.
pub fn build_debian(
    images_dir: &Path,
    dir: &Path,
    name: &str,
    packages: &[String],
    images: &Images,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<BootImage> {
    check(name)?;
    let _lock = super::rootfs::lock_builds(images_dir, progress)?;
    install(dir, name, images, progress, |_, tree, progress| {
        let list: Vec<&str> = packages.iter().map(String::as_str).collect();
        super::rootfs::debootstrap(images_dir, tree, &list, progress)?;
        Ok(Meta {
            run: ImageRun::default(),
            sha256: String::new(),
            packages: Some(packages.to_vec()),
            part: None,
        })
    })
}

/// Makes the image `name`: `fill` puts a root filesystem in the tree it is given (with a
/// work dir beside it), then it is packed and renamed into place, replacing an older one.
fn install(
    dir: &Path,
    name: &str,
    images: &Images,
    progress: &mut dyn FnMut(&str),
    fill: impl FnOnce(&Path, &Path, &mut dyn FnMut(&str)) -> anyhow::Result<Meta>,
) -> anyhow::Result<BootImage> {
    let base = images
        .get("default")
        .context("this host has no default image to boot an imported one with")?;
    let work = dir.join(format!(".work-{name}-{}", hearth_types::short_suffix()));
    let res = (|| {
        std::fs::create_dir_all(&work)?;
        let tree = work.join("root");
        std::fs::create_dir_all(&tree)?;
        let meta = fill(&work, &tree, &mut *progress)?;
        // The guest moves its own mounts here when it switches root.
        for d in ["proc", "sys", "dev", "run", "tmp", "root"] {
            std::fs::create_dir_all(tree.join(d))?;
        }
        let image = work.join("out");
        std::fs::create_dir_all(&image)?;
        super::rootfs::pack_ext4(&tree, &image.join("rootfs.ext4"), progress)?;
        std::fs::write(image.join("image.json"), serde_json::to_vec_pretty(&meta)?)?;
        replace(dir, name, &image)?;
        Ok::<_, anyhow::Error>(meta.run)
    })();
    let _ = std::fs::remove_dir_all(&work);
    let run = res?;
    let image = BootImage {
        rootfs: Some(dir.join(name).join("rootfs.ext4")),
        run: Some(run),
        ..base
    };
    images.insert(name, image.clone());
    progress("done");
    Ok(image)
}

/// Registers every imported image found in `dir` (after `default`, whose kernel and
/// initramfs they boot with).
pub fn load_all(dir: &Path, images: &Images) {
    let Some(base) = images.get("default") else {
        return;
    };
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            let _ = std::fs::remove_dir_all(e.path()); // an interrupted import
            continue;
        }
        let meta: Option<Meta> = std::fs::read(e.path().join("image.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match meta {
            Some(Meta {
                part: Some(part), ..
            }) if e.path().join(part.file_name()).is_file() => images.insert(
                &name,
                part.boot(base.clone(), e.path().join(part.file_name())),
            ),
            Some(meta) if e.path().join("rootfs.ext4").is_file() => images.insert(
                &name,
                BootImage {
                    rootfs: Some(e.path().join("rootfs.ext4")),
                    run: Some(meta.run),
                    ..base.clone()
                },
            ),
            _ => tracing::warn!(image = %name, "skipping an imported image with missing files"),
        }
    }
}
