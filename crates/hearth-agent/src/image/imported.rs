//! Images users upload: each is `<data dir>/imported-images/<name>/` holding `rootfs.ext4` and
//! `image.json` (what to run at boot), booted with the default kernel and initramfs like a
//! runtime image. They are found again when the agent restarts.
//!
//! An import unpacks into a work dir beside them and is renamed into place at the end, so
//! a failed or interrupted one leaves nothing an agent would load.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::oci::{self, Format, ImageRun};
use super::{BootImage, Images};

#[derive(Serialize, Deserialize)]
struct Meta {
    run: ImageRun,
    /// The upload's SHA-256 (an import).
    #[serde(default)]
    sha256: String,
    /// The Debian packages it was built with (a build).
    #[serde(default)]
    packages: Option<Vec<String>>,
}

fn check(name: &str) -> anyhow::Result<()> {
    hearth_types::vm::check_user_image_name(name).map_err(anyhow::Error::msg)
}

/// Unpacks `upload` into an ext4 root filesystem named `name` (replacing an older one of
/// that name) and registers it. Blocking: run it off the async threads.
pub fn import(
    upload: &Path,
    format: Format,
    name: &str,
    sha256: &str,
    dir: &Path,
    images: &Images,
) -> anyhow::Result<BootImage> {
    check(name)?;
    install(dir, name, images, &mut |_| {}, |work, tree, _| {
        let run = oci::unpack(upload, format, &work.join("scratch"), tree)?;
        Ok(Meta {
            run,
            sha256: sha256.to_string(),
            packages: None,
        })
    })
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
        let target = dir.join(name);
        let old = dir.join(format!(".old-{name}-{}", hearth_types::short_suffix()));
        if target.exists() {
            std::fs::rename(&target, &old)?;
        }
        std::fs::rename(&image, &target)?;
        let _ = std::fs::remove_dir_all(&old);
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
