//! Images users upload: each is `<data dir>/imported-images/<name>/` holding `rootfs.ext4` and
//! `image.json` (what to run at boot), booted with the default kernel and initramfs like a
//! runtime image. They are found again when the agent restarts.
//!
//! An import unpacks into a work dir beside them and is renamed into place at the end, so
//! a failed or interrupted one leaves nothing an agent would load.

use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::oci::{self, Format, ImageRun};
use super::{BootImage, Images};

#[derive(Serialize, Deserialize)]
struct Meta {
    run: ImageRun,
    /// The upload's SHA-256.
    sha256: String,
}

/// Names an import may not take: the built-in images'.
pub fn reserved(name: &str) -> bool {
    name == "default" || name.starts_with("runtime-")
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
    if reserved(name) || hearth_types::vm::check_name("image", name).is_err() {
        bail!("{name:?} cannot name an imported image: use lowercase letters, digits and dashes, not default or runtime-…");
    }
    let base = images
        .get("default")
        .context("this host has no default image to boot an imported one with")?;
    let work = dir.join(format!(".work-{name}-{}", hearth_types::short_suffix()));
    let res = (|| {
        std::fs::create_dir_all(&work)?;
        let tree = work.join("root");
        let run = oci::unpack(upload, format, &work.join("scratch"), &tree)?;
        // The guest moves its own mounts here when it switches root.
        for d in ["proc", "sys", "dev", "run", "tmp", "root"] {
            std::fs::create_dir_all(tree.join(d))?;
        }
        let image = work.join("out");
        std::fs::create_dir_all(&image)?;
        super::rootfs::pack_ext4(
            &tree,
            &image.join("rootfs.ext4"),
            &mut |line| tracing::info!(image = %name, "{line}"),
        )?;
        let meta = Meta {
            run,
            sha256: sha256.to_string(),
        };
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
