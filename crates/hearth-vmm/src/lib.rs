//! VMM drivers and what a host can run.
//!
//! [`discover`] finds the VMM binaries on a host and says, for each, whether it is usable and
//! why not. The drivers themselves (one module per VMM, behind one trait) live here too, so
//! the agent never builds a command line or speaks a VMM's API itself.

pub mod discover;
pub mod qemu;

pub use discover::{discover_vmms, VmmKind};
