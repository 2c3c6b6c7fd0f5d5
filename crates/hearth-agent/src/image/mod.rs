//! Images on this host. The `default` image is the host's guest kernel plus an initramfs
//! Hearth builds (see [`initramfs`]), cached under `<data dir>/images/default/` by a hash of
//! everything that goes into it.

pub mod cpio;
pub mod initramfs;

pub use initramfs::{build_default, DefaultImage};
