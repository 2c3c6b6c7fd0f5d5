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

fn table() -> &'static Mutex<Table> {
    TABLE.get_or_init(Default::default)
}

pub fn start(_pid1: bool) {
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
