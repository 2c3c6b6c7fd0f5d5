//! The one place that waits for children. PID 1 inherits every orphan, so a thread reaps
//! with `waitpid(-1)`; processes we started register their pid and get their status from
//! here. A status that arrives before its registration is kept until claimed.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Mutex, OnceLock};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

#[derive(Default)]
struct Table {
    waiting: HashMap<i32, Sender<WaitStatus>>,
    unclaimed: HashMap<i32, WaitStatus>,
}

static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
/// Whether the reaping thread runs (before it does, children are waited for directly).
static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn table() -> &'static Mutex<Table> {
    TABLE.get_or_init(Default::default)
}

pub fn start(_pid1: bool) {
    STARTED.store(true, std::sync::atomic::Ordering::SeqCst);
    std::thread::spawn(|| loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(status) => {
                let Some(pid) = status.pid() else { continue };
                let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
                match t.waiting.remove(&pid.as_raw()) {
                    Some(tx) => {
                        let _ = tx.send(status);
                    }
                    None => {
                        if t.unclaimed.len() > 4096 {
                            t.unclaimed.clear();
                        }
                        t.unclaimed.insert(pid.as_raw(), status);
                    }
                }
            }
            Err(nix::Error::ECHILD) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(_) => {}
        }
    });
}

/// A receiver for the exit status of `pid`.
pub fn watch(pid: i32) -> Receiver<WaitStatus> {
    let (tx, rx) = channel();
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    match t.unclaimed.remove(&pid) {
        Some(status) => {
            let _ = tx.send(status);
        }
        None => {
            t.waiting.insert(pid, tx);
        }
    }
    rx
}

/// Runs `cmd` to its end; true when it exits with 0. Its status comes from the reaping
/// thread once that runs: `Command::status` would race its `waitpid(-1)` and lose the
/// child (ECHILD), failing a command that worked.
pub fn run(cmd: &mut std::process::Command) -> bool {
    let Ok(mut child) = cmd.spawn() else {
        return false;
    };
    if !STARTED.load(std::sync::atomic::Ordering::SeqCst) {
        return child.wait().is_ok_and(|s| s.success());
    }
    matches!(
        watch(child.id() as i32).recv(),
        Ok(WaitStatus::Exited(_, 0))
    )
}
