//! `hearth-guest`: the agent inside every Hearth VM.
//!
//! As PID 1 (in Hearth's initramfs) it mounts the pseudo filesystems, loads the kernel modules
//! listed in `/etc/hearth/modules`, sets the hostname from `hearth.hostname=` on the kernel
//! command line and reaps orphans. In every role it finds the virtio-serial port named
//! [`PORT_NAME`] and serves the guest protocol on it, reopening the port when the host side
//! goes away (an agent restart, a snapshot restore).
//!
//! Plain threads, no async runtime: the binary stays small and static.

mod exec;
mod init;
mod reaper;
mod server;
mod sysinfo;
mod worker;

use hearth_guest_proto::PORT_NAME;

fn main() {
    let pid1 = std::process::id() == 1;
    if pid1 {
        init::as_pid1();
    }
    reaper::start(pid1);
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    log(&format!(
        "hearth-guest {} serving on port {PORT_NAME}",
        env!("CARGO_PKG_VERSION")
    ));
    server::serve_forever(&boot_id);
}

/// A line on the console (the VM's serial log).
pub fn log(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "hearth-guest: {msg}");
}
