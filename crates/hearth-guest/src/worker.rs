//! The persistent worker: one long-lived process per guest that answers a JSON line with a
//! JSON line (a function's runtime in persistent mode, where starting an interpreter per call
//! would cost more than the call).
//!
//! Calls are serialised. The worker's stdout carries only answers; its stderr is collected
//! and cut at each [`CALL_END`] line, so every call gets the logs written during it. A worker
//! that times out is killed with its process group; one that exits is started again by the
//! next call.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use hearth_guest_proto::msg::{Response, CALL_END};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

/// Logs kept per call; older output is dropped first.
const MAX_LOGS: usize = 256 << 10;
/// How long the logs of a call may trail its answer.
const LOG_GRACE: Duration = Duration::from_secs(1);

pub struct CallSpec {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub line: String,
    pub timeout_ms: u64,
    /// Start the worker (if it is not running) and send nothing.
    pub start_only: bool,
}

type Key = (Vec<String>, BTreeMap<String, String>, Option<String>);

struct Worker {
    key: Key,
    pid: i32,
    stdin: ChildStdin,
    answers: Receiver<String>,
    status: Receiver<WaitStatus>,
    logs: Arc<(Mutex<Vec<u8>>, Condvar)>,
}

static WORKER: Mutex<Option<Worker>> = Mutex::new(None);

/// Runs one call, starting (or replacing) the worker as needed.
pub fn call(spec: CallSpec) -> Response {
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return Response::Error {
            message: "argv must name a program".into(),
        };
    }
    if spec.line.contains('\n') {
        return Response::Error {
            message: "the line must not contain a newline".into(),
        };
    }
    let mut slot = WORKER.lock().unwrap_or_else(|p| p.into_inner());
    let key = (spec.argv.clone(), spec.env.clone(), spec.cwd.clone());
    // A worker that exited between calls is replaced rather than reported: the call that
    // ended it already got its answer.
    if slot
        .as_ref()
        .is_some_and(|w| w.key != key || w.status.try_recv().is_ok())
    {
        if let Some(old) = slot.take() {
            old.kill();
        }
    }
    if slot.is_none() {
        match Worker::start(key, &spec) {
            Ok(w) => *slot = Some(w),
            Err(e) => {
                return Response::Called {
                    line: None,
                    logs: format!("hearth-guest: cannot run {}: {e}\n", spec.argv[0]),
                    code: Some(127),
                    timed_out: false,
                }
            }
        }
    }
    let w = slot.as_mut().expect("started above");
    if spec.start_only {
        return Response::Called {
            line: None,
            logs: w.take_logs(Duration::ZERO),
            code: None,
            timed_out: false,
        };
    }
    let sent = w
        .stdin
        .write_all(spec.line.as_bytes())
        .and_then(|_| w.stdin.write_all(b"\n"))
        .and_then(|_| w.stdin.flush());
    let answer = if sent.is_err() {
        Err(RecvTimeoutError::Disconnected)
    } else if spec.timeout_ms == 0 {
        w.answers.recv().map_err(|_| RecvTimeoutError::Disconnected)
    } else {
        w.answers
            .recv_timeout(Duration::from_millis(spec.timeout_ms))
    };
    match answer {
        Ok(line) => Response::Called {
            line: Some(line),
            logs: w.take_logs(LOG_GRACE),
            code: None,
            timed_out: false,
        },
        Err(RecvTimeoutError::Timeout) => {
            let w = slot.take().expect("present");
            let logs = w.take_logs(Duration::ZERO);
            w.kill();
            Response::Called {
                line: None,
                logs,
                code: Some(137),
                timed_out: true,
            }
        }
        Err(RecvTimeoutError::Disconnected) => {
            let w = slot.take().expect("present");
            let code = match w.status.recv_timeout(Duration::from_secs(2)) {
                Ok(WaitStatus::Exited(_, c)) => c,
                Ok(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
                _ => -1,
            };
            let logs = w.take_logs(Duration::from_millis(200));
            w.kill();
            Response::Called {
                line: None,
                logs,
                code: Some(code),
                timed_out: false,
            }
        }
    }
}

impl Worker {
    fn start(key: Key, spec: &CallSpec) -> std::io::Result<Worker> {
        let mut cmd = Command::new(&spec.argv[0]);
        cmd.args(&spec.argv[1..])
            .env_clear()
            .env("PATH", crate::exec::PATH)
            .env("HOME", "/root")
            .envs(&spec.env)
            .current_dir(spec.cwd.as_deref().unwrap_or("/"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn()?;
        let pid = child.id() as i32;
        let status = crate::reaper::watch(pid);
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, answers) = channel();
        std::thread::spawn(move || {
            // An answer is one line; a longer one than a frame can carry ends the worker's
            // usefulness, so it is cut and the reader stops.
            let mut r = BufReader::new(stdout);
            loop {
                let mut buf = Vec::new();
                match (&mut r)
                    .take(hearth_guest_proto::MAX_PAYLOAD as u64)
                    .read_until(b'\n', &mut buf)
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if buf.last() == Some(&b'\n') {
                            buf.pop();
                        }
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let logs: Arc<(Mutex<Vec<u8>>, Condvar)> = Arc::default();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut r = stderr;
            let mut buf = vec![0u8; 16 << 10];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let (m, cv) = &*sink;
                        let mut l = m.lock().unwrap_or_else(|p| p.into_inner());
                        l.extend_from_slice(&buf[..n]);
                        if l.len() > MAX_LOGS * 2 {
                            let cut = l.len() - MAX_LOGS;
                            l.drain(..cut);
                        }
                        cv.notify_all();
                    }
                }
            }
        });
        Ok(Worker {
            key,
            pid,
            stdin: child.stdin.take().expect("piped"),
            answers,
            status,
            logs,
        })
    }

    /// The logs up to the next end-of-call line, waiting up to `grace` for it; everything
    /// collected so far when it does not come.
    fn take_logs(&self, grace: Duration) -> String {
        let marker = format!("{CALL_END}\n");
        let (m, cv) = &*self.logs;
        let deadline = Instant::now() + grace;
        let mut l = m.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(at) = find(&l, marker.as_bytes()) {
                let logs: Vec<u8> = l.drain(..at + marker.len()).take(at).collect();
                return tail(&logs);
            }
            let now = Instant::now();
            if now >= deadline {
                let logs: Vec<u8> = std::mem::take(&mut *l);
                return tail(&logs);
            }
            l = cv
                .wait_timeout(l, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn kill(self) {
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn tail(b: &[u8]) -> String {
    let from = b.len().saturating_sub(MAX_LOGS);
    String::from_utf8_lossy(&b[from..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_sh(script: &str, line: &str, timeout_ms: u64) -> Response {
        call(CallSpec {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: BTreeMap::new(),
            cwd: None,
            line: line.into(),
            timeout_ms,
            start_only: false,
        })
    }

    #[test]
    fn a_worker_keeps_state_and_reports_logs_timeouts_and_exits() {
        crate::reaper::start(false);
        // Counts its calls, echoes the line, logs to stderr, ends each call with the marker.
        let script = r#"n=0; while read -r l; do n=$((n+1)); echo "log $n" >&2; printf '\036hearth-call-end\n' >&2; echo "$n:$l"; if [ "$l" = die ]; then exit 3; fi; if [ "$l" = hang ]; then sleep 30; fi; done"#;
        let Response::Called { line, logs, .. } = call_sh(script, "a", 5000) else {
            panic!()
        };
        assert_eq!(line.as_deref(), Some("1:a"));
        assert_eq!(logs, "log 1\n");
        let Response::Called { line, logs, .. } = call_sh(script, "b", 5000) else {
            panic!()
        };
        assert_eq!(line.as_deref(), Some("2:b"), "the same worker answers");
        assert_eq!(logs, "log 2\n");
        // `die` answers, then the worker exits: the next call finds it gone and restarts it.
        let Response::Called { line, .. } = call_sh(script, "die", 5000) else {
            panic!()
        };
        assert_eq!(line.as_deref(), Some("3:die"));
        std::thread::sleep(Duration::from_millis(200));
        let Response::Called { line, .. } = call_sh(script, "c", 5000) else {
            panic!()
        };
        assert_eq!(line.as_deref(), Some("1:c"), "a fresh worker answers");
        // A worker that exits without answering reports its exit code and logs.
        let Response::Called {
            line, code, logs, ..
        } = call_sh("read -r l; echo bye >&2; exit 4", "x", 5000)
        else {
            panic!()
        };
        assert_eq!((line, code), (None, Some(4)));
        assert_eq!(logs, "bye\n");
        let Response::Called {
            line, timed_out, ..
        } = call_sh("while read -r l; do sleep 30; done", "x", 300)
        else {
            panic!()
        };
        assert!(timed_out && line.is_none());
        assert!(matches!(
            call_sh(script, "two\nlines", 1000),
            Response::Error { .. }
        ));
    }
}
