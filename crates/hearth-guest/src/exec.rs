//! Running commands for the host: plain (separate stdout and stderr, stdin streamed in) or
//! on a PTY (one terminal both ways, resizable). Each runs in its own process group (or
//! session, for a PTY) so a timeout or a cancel kills everything it started.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::Duration;

use hearth_guest_proto::frame::CHUNK;
use hearth_guest_proto::msg::{PtySize, Response};
use hearth_guest_proto::{Frame, Kind};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::server::Out;

pub enum Ctl {
    Stdin(Vec<u8>),
    Eof,
    Resize(PtySize),
    Cancel,
}

pub struct Spec {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub timeout_ms: u64,
    pub pty: Option<PtySize>,
}

pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long to wait for output to drain after the process exits.
const DRAIN: Duration = Duration::from_secs(2);

fn command(spec: &Spec) -> Command {
    let mut c = Command::new(&spec.argv[0]);
    c.args(&spec.argv[1..])
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", "/root")
        .envs(&spec.env)
        .current_dir(spec.cwd.as_deref().unwrap_or("/"));
    c
}

fn not_started(stream: u32, out: &Out, argv0: &str, e: std::io::Error) -> Response {
    out.send(&Frame::new(
        stream,
        Kind::Stderr,
        format!("hearth-guest: cannot run {argv0}: {e}\n").into_bytes(),
    ));
    Response::Exited {
        code: 127,
        signal: None,
        timed_out: false,
    }
}

/// Runs `spec`; `ctl` carries the stream's stdin, resizes and cancels.
pub fn run(stream: u32, spec: Spec, out: &Out, ctl: Receiver<Ctl>) -> Response {
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return Response::Error {
            message: "argv must name a program".into(),
        };
    }
    match spec.pty {
        None => run_plain(stream, &spec, out, ctl),
        Some(size) => run_pty(stream, &spec, size, out, ctl),
    }
}

/// Streams everything `r` yields as `kind` frames; signals `done` at the end.
fn pump(mut r: impl Read + Send + 'static, stream: u32, kind: Kind, out: Out) -> Receiver<()> {
    let (done_tx, done) = channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !out.send(&Frame::new(stream, kind, buf[..n].to_vec())) {
                        break;
                    }
                }
            }
        }
        let _ = done_tx.send(());
    });
    done
}

/// Waits for `pid` with the spec's timeout, killing its group when it runs out.
fn wait(pid: i32, timeout_ms: u64) -> (WaitStatus, bool) {
    let rx = crate::reaper::watch(pid);
    let status = if timeout_ms == 0 {
        rx.recv().ok()
    } else {
        match rx.recv_timeout(Duration::from_millis(timeout_ms)) {
            Ok(s) => Some(s),
            Err(RecvTimeoutError::Timeout) => {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                return (rx.recv().unwrap_or(WaitStatus::StillAlive), true);
            }
            Err(RecvTimeoutError::Disconnected) => None,
        }
    };
    (status.unwrap_or(WaitStatus::StillAlive), false)
}

fn exited(status: WaitStatus, timed_out: bool) -> Response {
    match status {
        WaitStatus::Exited(_, code) => Response::Exited {
            code,
            signal: None,
            timed_out,
        },
        WaitStatus::Signaled(_, sig, _) => Response::Exited {
            code: 128 + sig as i32,
            signal: Some(sig as i32),
            timed_out,
        },
        other => Response::Error {
            message: format!("unexpected wait status {other:?}"),
        },
    }
}

fn run_plain(stream: u32, spec: &Spec, out: &Out, ctl: Receiver<Ctl>) -> Response {
    let mut cmd = command(spec);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return not_started(stream, out, &spec.argv[0], e),
    };
    let pid = child.id() as i32;
    let o = pump(
        child.stdout.take().expect("piped"),
        stream,
        Kind::Stdout,
        out.clone(),
    );
    let e = pump(
        child.stderr.take().expect("piped"),
        stream,
        Kind::Stderr,
        out.clone(),
    );
    let mut stdin = child.stdin.take();
    std::thread::spawn(move || {
        for msg in ctl {
            match msg {
                Ctl::Stdin(bytes) => {
                    if let Some(s) = stdin.as_mut() {
                        if s.write_all(&bytes).is_err() {
                            stdin = None;
                        }
                    }
                }
                Ctl::Eof => stdin = None,
                Ctl::Cancel => {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
                Ctl::Resize(_) => {}
            }
        }
    });
    let (status, timed_out) = wait(pid, spec.timeout_ms);
    let _ = o.recv_timeout(DRAIN);
    let _ = e.recv_timeout(DRAIN);
    exited(status, timed_out)
}

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);

fn winsize(s: PtySize) -> libc::winsize {
    libc::winsize {
        ws_row: s.rows,
        ws_col: s.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn run_pty(stream: u32, spec: &Spec, size: PtySize, out: &Out, ctl: Receiver<Ctl>) -> Response {
    let ws = winsize(size);
    let pty = match nix::pty::openpty(Some(&ws), None) {
        Ok(p) => p,
        Err(e) => {
            return Response::Error {
                message: format!("openpty: {e}"),
            }
        }
    };
    let slave: OwnedFd = pty.slave;
    let io = |fd: &OwnedFd| fd.try_clone().map(|f| Stdio::from(File::from(f)));
    let (i, o, e) = match (io(&slave), io(&slave), io(&slave)) {
        (Ok(i), Ok(o), Ok(e)) => (i, o, e),
        _ => {
            return Response::Error {
                message: "duplicating the pty".into(),
            }
        }
    };
    let mut cmd = command(spec);
    cmd.env(
        "TERM",
        spec.env
            .get("TERM")
            .map(String::as_str)
            .unwrap_or("xterm-256color"),
    )
    .stdin(i)
    .stdout(o)
    .stderr(e);
    // SAFETY: setsid and ioctl are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return not_started(stream, out, &spec.argv[0], e),
    };
    drop(cmd);
    drop(slave);
    let pid = child.id() as i32;
    let master = File::from(pty.master);
    let reader = master.try_clone().expect("dup master");
    let done = pump(reader, stream, Kind::Stdout, out.clone());
    std::thread::spawn(move || {
        let mut master = master;
        for msg in ctl {
            match msg {
                Ctl::Stdin(bytes) => {
                    let _ = master.write_all(&bytes);
                }
                Ctl::Resize(s) => {
                    // SAFETY: a valid fd and a valid winsize.
                    let _ = unsafe { set_winsize(master.as_raw_fd(), &winsize(s)) };
                }
                Ctl::Cancel => {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGHUP);
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
                Ctl::Eof => {}
            }
        }
    });
    let (status, timed_out) = wait(pid, spec.timeout_ms);
    let _ = done.recv_timeout(DRAIN);
    exited(status, timed_out)
}
