//! The VMM process, as every driver handles it: started in its own process group (and in a
//! TAP's network namespace when it needs one), owned by one task that reaps it and reports
//! how it ended, and found again by its pid file after an agent restart, pinned by a pidfd
//! so that no signal can reach a process that reused its PID.

use std::path::Path;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::{VmmError, ADOPTED_EXIT};

/// How a driver stops its VMM and learns that it has ended.
pub struct Owned {
    pub pid: u32,
    pub exit: oneshot::Receiver<String>,
    /// A message asks the owning task to SIGKILL the VMM.
    pub kill: mpsc::Sender<()>,
}

/// Prepares `cmd` to run as a VMM: no stdin, its own process group (not killed with the
/// agent: a restarted agent takes it over) and, given one, the network namespace `netns`
/// (a TAP is opened by name in the VMM's own namespace).
pub fn prepare(cmd: &mut tokio::process::Command, netns: Option<&Path>) -> Result<(), VmmError> {
    cmd.stdin(std::process::Stdio::null()).process_group(0);
    if let Some(ns) = netns {
        let ns = std::fs::File::open(ns)?;
        // SAFETY: between fork and exec the closure only calls setns(2), which is
        // async-signal-safe, on a file opened before the fork.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
    }
    Ok(())
}

/// Waits until `ready` holds, while the child runs, bounded by `timeout`. If the child
/// exits first, the error carries its status and what it wrote to `stderr_log`; on
/// timeout it is killed.
pub async fn wait_ready(
    vmm: &'static str,
    child: &mut tokio::process::Child,
    stderr_log: &Path,
    timeout: Duration,
    ready: impl Fn() -> bool,
) -> Result<(), VmmError> {
    let deadline = tokio::time::Instant::now() + timeout;
    while !ready() {
        if let Some(status) = child.try_wait()? {
            let stderr = std::fs::read_to_string(stderr_log).unwrap_or_default();
            return Err(VmmError::EarlyExit {
                vmm,
                status: status.to_string(),
                stderr: tail(&stderr, 4000),
            });
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(VmmError::StartTimeout {
                vmm,
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The last `max` bytes of `text` (on a character boundary), trimmed.
fn tail(text: &str, max: usize) -> String {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].trim().to_string()
}

/// What to clean up once a VMM has ended (a jailed Firecracker's cgroup).
pub type OnExit = Box<dyn FnOnce() + Send>;

/// Hands the child to a task that reaps it (so a kill never hits a reused PID), runs
/// `on_exit`, and reports how it ended.
pub fn own(mut child: tokio::process::Child, on_exit: Option<OnExit>) -> Owned {
    let pid = child.id().unwrap_or(0);
    let (kill, mut kill_rx) = mpsc::channel::<()>(1);
    let (exit_tx, exit) = oneshot::channel();
    tokio::spawn(async move {
        let status = loop {
            tokio::select! {
                s = child.wait() => break s,
                Some(()) = kill_rx.recv() => { let _ = child.start_kill(); }
            }
        };
        let what = match status {
            Ok(s) => s.to_string(),
            Err(e) => format!("unknown ({e})"),
        };
        if let Some(f) = on_exit {
            f();
        }
        let _ = exit_tx.send(what);
    });
    Owned { pid, exit, kill }
}

/// Kills a child that has not been handed to [`own`] yet, and reaps it.
pub async fn discard(mut child: tokio::process::Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// The PID in `pid_file`, when it names a live process that `is_ours` accepts (a PID read
/// from a file may have been reused by anything since), pinned by a pidfd.
pub fn find(pid_file: &Path, is_ours: impl Fn(i32) -> bool) -> Option<(i32, Pidfd)> {
    let pid = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse::<i32>()
        .ok()?;
    // Opened before the check: once the check passes, the pidfd can only be that process.
    let pidfd = Pidfd::open(pid).ok()?;
    is_ours(pid).then_some((pid, pidfd))
}

/// Watches a VMM found by [`find`] (not the agent's child: its exit status is unknown).
pub fn watch_adopted(pid: i32, pidfd: Pidfd) -> Result<Owned, VmmError> {
    let (kill, mut kill_rx) = mpsc::channel::<()>(1);
    let (exit_tx, exit) = oneshot::channel();
    // SAFETY: the Pidfd owns its descriptor until the AsyncFd drops it.
    let exited = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    }
    .map_err(|e| VmmError::Io(e.into()))?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = exited.readable() => break,
                Some(()) = kill_rx.recv() => exited.get_ref().kill(),
            }
        }
        let _ = exit_tx.send(ADOPTED_EXIT.to_string());
    });
    Ok(Owned {
        pid: pid as u32,
        exit,
        kill,
    })
}

fn cmdline(pid: i32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
}

/// Whether process `pid`'s command line names `path` (a QEMU names its run dir).
pub fn cmdline_names(pid: i32, path: &Path) -> bool {
    String::from_utf8_lossy(&cmdline(pid)).contains(&*path.to_string_lossy())
}

/// Whether one of process `pid`'s arguments is exactly `arg`.
pub fn has_arg(pid: i32, arg: &str) -> bool {
    cmdline(pid).split(|b| *b == 0).any(|a| a == arg.as_bytes())
}

/// Whether process `pid` works in `dir` (a Firecracker or Cloud Hypervisor runs in its
/// VM's directory, a jailed Firecracker in its chroot).
pub fn works_in(pid: i32, dir: &Path) -> bool {
    let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else {
        return false;
    };
    std::fs::canonicalize(dir).is_ok_and(|d| d == cwd)
}

/// A process file descriptor (pidfd_open(2)): readable once the process has exited, and a
/// target for signals that cannot hit a reused PID.
pub struct Pidfd(std::os::fd::OwnedFd);

impl Pidfd {
    pub fn open(pid: i32) -> std::io::Result<Pidfd> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just created and nothing else owns it.
        Ok(Pidfd(unsafe {
            std::os::fd::OwnedFd::from_raw_fd(fd as i32)
        }))
    }

    pub fn kill(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

impl std::os::fd::AsRawFd for Pidfd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_owned_process_is_killed_and_reaped_and_found_by_its_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = tokio::process::Command::new("sleep");
        cmd.arg("30").current_dir(dir.path());
        prepare(&mut cmd, None).unwrap();
        let child = cmd.spawn().unwrap();
        let pid = child.id().unwrap() as i32;
        let pid_file = dir.path().join("vmm.pid");
        std::fs::write(&pid_file, pid.to_string()).unwrap();
        assert!(works_in(pid, dir.path()));
        assert!(!works_in(pid, Path::new("/")));
        assert!(find(&pid_file, |p| works_in(p, dir.path())).is_some());
        assert!(find(&pid_file, |_| false).is_none());
        // Until the exec, the command line is the test's.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !has_arg(pid, "sleep") && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(has_arg(pid, "30") && !has_arg(pid, "3"));
        let owned = own(child, None);
        owned.kill.send(()).await.unwrap();
        let how = tokio::time::timeout(Duration::from_secs(10), owned.exit)
            .await
            .unwrap()
            .unwrap();
        assert!(how.contains("signal: 9"), "{how}");
        assert!(find(&pid_file, |_| true).is_none(), "a reaped PID is gone");
    }

    #[tokio::test]
    async fn a_vmm_that_dies_at_start_says_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr");
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", "echo no kvm here >&2; exit 3"])
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().unwrap();
        let err = wait_ready("fc", &mut child, &log, Duration::from_secs(10), || false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no kvm here"), "{err}");
    }
}
