//! Images on this host. The `default` image is the host's guest kernel plus an initramfs
//! Hearth builds (see [`initramfs`]), cached under `<data dir>/images/default/` by a hash of
//! everything that goes into it. Runtime images ([`rootfs`]) and imported ones
//! ([`imported`], from container images: [`oci`]) add a root filesystem the guest switches
//! to.

pub mod cpio;
pub mod imported;
pub mod initramfs;
pub mod oci;
pub mod rootfs;

pub use initramfs::{build_default, BootImage};

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use hearth_agent_api::pb;

/// The images this agent can boot, by name.
#[derive(Clone, Default)]
pub struct Images {
    by_name: Arc<RwLock<BTreeMap<String, BootImage>>>,
    /// Signalled on every insert, so the manager hears of a new image at once.
    changed: Arc<tokio::sync::Notify>,
}

impl Images {
    pub fn insert(&self, name: &str, image: BootImage) {
        self.by_name
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), image);
        self.changed.notify_one();
    }

    /// Resolves after the next insert (or at once if one happened since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    pub fn get(&self, name: &str) -> Option<BootImage> {
        self.by_name
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn report(&self) -> Vec<pb::ImageInfo> {
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        self.by_name
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, i)| pb::ImageInfo {
                name: name.clone(),
                kind: if i.rootfs.is_some() {
                    "rootfs"
                } else {
                    "initramfs"
                }
                .into(),
                kernel_version: i.kernel_version.clone(),
                size_bytes: size(&i.kernel) + size(&i.initrd) + i.rootfs.as_deref().map_or(0, size),
            })
            .collect()
    }
}
