//! The VMs on this host. Each VM is owned by one task ([`owner`]); everything else holds an
//! [`OwnerHandle`] and sends it commands over a bounded mailbox (full → "busy, retry") or
//! reads the state it publishes. The registry maps VM ids to handles and turns RPC-level
//! requests into commands; it never touches a VMM itself.
//!
//! The manager sends a VM's whole spec with every start, so the agent keeps no database: a
//! VM it does not know is simply one it has not been asked to start.

pub mod files;
mod owner;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_agent_api::pb;
use hearth_guest_proto::client::GuestClient;
use hearth_types::vm::VmState;
use tokio::sync::{mpsc, oneshot, watch};

use crate::accel::AccelState;
use crate::image::Images;

pub use owner::{port_specs, PortSpec, VmSpec, VolumeSpec};

/// How many commands may wait for one VM's owner.
const MAILBOX: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("this agent has no VM {0}")]
    NotFound(String),
    #[error("this host has no snapshot {0}")]
    NoSnapshot(String),
    #[error("VM is {state}: cannot {op}")]
    WrongState { state: VmState, op: &'static str },
    #[error("VM {0} is busy with other requests; retry")]
    Busy(String),
    #[error("{0}")]
    Invalid(String),
    /// A snapshot that does not fit where it would be restored.
    #[error("{0}")]
    Incompatible(String),
    #[error("{0}")]
    Failed(String),
}

/// What the rest of the agent shares with every owner.
pub struct VmHost {
    /// Which VMM runs each VM.
    pub vmms: crate::vmms::Vmms,
    pub net: Arc<crate::net::HostNet>,
    pub accel: AccelState,
    pub images: Images,
    pub run_root: PathBuf,
    /// VM disks and snapshots.
    pub files: files::Roots,
    /// How long a guest may take from launch to its agent answering.
    pub boot_timeout: Duration,
    /// Status changes, pushed to the manager.
    pub reports: mpsc::Sender<pb::VmStatus>,
}

enum Command {
    Start(VmSpec, oneshot::Sender<Result<pb::VmStatus, VmError>>),
    Stop(bool, oneshot::Sender<Result<pb::VmStatus, VmError>>),
    Reboot(oneshot::Sender<Result<pb::VmStatus, VmError>>),
    /// Pause (true) or resume (false).
    Pause(bool, oneshot::Sender<Result<pb::VmStatus, VmError>>),
    Delete(oneshot::Sender<Result<(), VmError>>),
    /// Replace the port forwards.
    Ports(
        Vec<owner::PortSpec>,
        oneshot::Sender<Result<pb::VmStatus, VmError>>,
    ),
    /// Take a snapshot with this id.
    Snapshot(String, oneshot::Sender<Result<pb::SnapshotInfo, VmError>>),
    /// Run this spec from the snapshot with this id, discarding the current run.
    Restore(
        VmSpec,
        String,
        oneshot::Sender<Result<pb::VmStatus, VmError>>,
    ),
}

#[derive(Clone)]
struct OwnerHandle {
    tx: mpsc::Sender<Command>,
    status: watch::Receiver<pb::VmStatus>,
    guest: watch::Receiver<Option<GuestClient>>,
    run_dir: PathBuf,
}

#[derive(Clone)]
pub struct Vms {
    host: Arc<VmHost>,
    owners: Arc<Mutex<HashMap<String, OwnerHandle>>>,
}

impl Vms {
    pub fn new(host: VmHost) -> Vms {
        Vms {
            host: Arc::new(host),
            owners: Arc::default(),
        }
    }

    fn handle(&self, id: &str) -> Result<OwnerHandle, VmError> {
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| VmError::NotFound(id.to_string()))
    }

    async fn send<T>(
        &self,
        id: &str,
        make: impl FnOnce(oneshot::Sender<Result<T, VmError>>) -> Command,
    ) -> Result<T, VmError> {
        let h = self.handle(id)?;
        let (tx, rx) = oneshot::channel();
        h.tx.try_send(make(tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => VmError::Busy(id.to_string()),
            mpsc::error::TrySendError::Closed(_) => VmError::NotFound(id.to_string()),
        })?;
        rx.await
            .map_err(|_| VmError::Failed(format!("VM {id}'s owner stopped")))?
    }

    /// The owner of `spec`'s VM, created on first sight (then true).
    fn adopt(&self, spec: &VmSpec) -> Result<bool, VmError> {
        spec.validate()?;
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        if owners.contains_key(&spec.id) {
            return Ok(false);
        }
        let run_dir = self.host.run_root.join(&spec.id);
        let handle = owner::spawn(self.host.clone(), spec, run_dir, MAILBOX);
        owners.insert(spec.id.clone(), handle);
        Ok(true)
    }

    /// Starts a VM, creating its owner on first sight.
    pub async fn start(&self, spec: VmSpec) -> Result<pb::VmStatus, VmError> {
        self.adopt(&spec)?;
        let id = spec.id.clone();
        self.send(&id, |tx| Command::Start(spec, tx)).await
    }

    /// Starts a VM from a snapshot: a new VM, or in place for one this agent has.
    pub async fn restore(&self, spec: VmSpec, snapshot: &str) -> Result<pb::VmStatus, VmError> {
        plain_id("snapshot", snapshot)?;
        let new = self.adopt(&spec)?;
        let id = spec.id.clone();
        let res = self
            .send(&id, |tx| Command::Restore(spec, snapshot.to_string(), tx))
            .await;
        if res.is_err() && new {
            // A refused restore leaves no VM behind.
            let _ = self.delete(&id).await;
        }
        res
    }

    /// Saves a VM's memory and disk as snapshot `snapshot`.
    pub async fn snapshot(&self, id: &str, snapshot: &str) -> Result<pb::SnapshotInfo, VmError> {
        plain_id("snapshot", snapshot)?;
        self.send(id, |tx| Command::Snapshot(snapshot.to_string(), tx))
            .await
    }

    /// Removes a snapshot's files. Deleting an unknown snapshot succeeds.
    pub fn delete_snapshot(&self, snapshot: &str) -> Result<(), VmError> {
        plain_id("snapshot", snapshot)?;
        let removed = std::fs::remove_dir_all(self.host.files.snapshot(snapshot).0);
        gone(removed, &format!("snapshot {snapshot}"))
    }

    /// Removes a volume's file. Deleting an unknown volume succeeds.
    /// Removes a managed network's bridge and rules from this host.
    pub async fn delete_network(&self, id: &str) -> Result<(), VmError> {
        plain_id("network", id)?;
        self.host.net.remove_network(id).await;
        Ok(())
    }

    pub fn delete_volume(&self, id: &str) -> Result<(), VmError> {
        plain_id("volume", id)?;
        gone(
            std::fs::remove_file(self.host.files.volume(id)),
            &format!("volume {id}"),
        )
    }

    pub async fn stop(&self, id: &str, force: bool) -> Result<pb::VmStatus, VmError> {
        self.send(id, |tx| Command::Stop(force, tx)).await
    }

    pub async fn reboot(&self, id: &str) -> Result<pb::VmStatus, VmError> {
        self.send(id, Command::Reboot).await
    }

    /// Replaces a VM's port forwards (now if it runs, and at later starts).
    pub async fn set_ports(
        &self,
        id: &str,
        ports: Vec<owner::PortSpec>,
    ) -> Result<pb::VmStatus, VmError> {
        self.send(id, |tx| Command::Ports(ports, tx)).await
    }

    /// Pauses (or with `pause` false, resumes) a VM.
    pub async fn pause(&self, id: &str, pause: bool) -> Result<pb::VmStatus, VmError> {
        self.send(id, |tx| Command::Pause(pause, tx)).await
    }

    /// Kills the VM if it runs and removes its run dir. Deleting an unknown VM succeeds.
    pub async fn delete(&self, id: &str) -> Result<(), VmError> {
        match self.send(id, Command::Delete).await {
            Ok(()) | Err(VmError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(())
    }

    pub fn status(&self, id: &str) -> Result<pb::VmStatus, VmError> {
        Ok(self.handle(id)?.status.borrow().clone())
    }

    pub fn list(&self) -> Vec<pb::VmStatus> {
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|h| h.status.borrow().clone())
            .collect()
    }

    /// The guest channel of a running VM.
    pub fn guest(&self, id: &str, op: &'static str) -> Result<GuestClient, VmError> {
        let h = self.handle(id)?;
        let state = state_of(&h.status.borrow());
        let guest = h.guest.borrow().clone();
        match (state, guest) {
            (VmState::Running, Some(g)) if !g.is_closed() => Ok(g),
            (VmState::Running, _) => Err(VmError::Failed(
                "the guest channel is closed; the VM is being recovered".into(),
            )),
            (state, _) => Err(VmError::WrongState { state, op }),
        }
    }

    pub fn serial_log(&self, id: &str) -> Result<PathBuf, VmError> {
        Ok(self.handle(id)?.run_dir.join("serial.log"))
    }

    /// Takes over the VMs a previous run of this agent left running (it was restarted, or
    /// killed): each gets its owner again, with its guest channel and port forwards. What
    /// cannot be taken over (no record of the run, or no VMM left) is cleaned up; the
    /// manager starts again any VM that should run and that this agent does not report.
    pub async fn take_over_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.host.run_root) else {
            return;
        };
        for e in entries.flatten() {
            let dir = e.path();
            let record = owner::RunRecord::read(&dir)
                .filter(|r| Some(r.spec.id.as_str()) == dir.file_name().and_then(|n| n.to_str()))
                .filter(|r| r.spec.validate().is_ok());
            let Some(record) = record else {
                reap(&dir);
                continue;
            };
            let kind = record.vmm_kind();
            let hypervisor = self.host.vmms.driver(kind, kind.locate());
            match hypervisor.adopt(&dir).await {
                Ok(Some(adopted)) => {
                    let id = record.spec.id.clone();
                    let handle = owner::spawn_adopted(
                        self.host.clone(),
                        record,
                        dir,
                        adopted,
                        hypervisor,
                        MAILBOX,
                    )
                    .await;
                    self.owners
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, handle);
                }
                Ok(None) => reap(&dir),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "a VM left running could not be taken over; killing it");
                    reap(&dir);
                }
            }
        }
    }

    /// Kills every VM (agent shutdown in tests and `hearth up`).
    pub async fn shutdown_all(&self) {
        let ids: Vec<String> = self
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for id in ids {
            let _ = self.stop(&id, true).await;
        }
    }
}

/// `id` is safe as a file name and a log field, or an `Invalid` error naming `what`.
fn plain_id(what: &str, id: &str) -> Result<(), VmError> {
    if hearth_types::is_plain_id(id) {
        Ok(())
    } else {
        Err(VmError::Invalid(format!(
            "{what} id must be 1–64 letters, digits or dashes"
        )))
    }
}

/// A removal's outcome: done, or nothing was there (also done), or why it failed.
fn gone(removed: std::io::Result<()>, what: &str) -> Result<(), VmError> {
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(VmError::Failed(format!("removing {what}: {e}")))
        }
        _ => Ok(()),
    }
}

pub fn state_of(s: &pb::VmStatus) -> VmState {
    s.state.parse().unwrap_or(VmState::Failed)
}

/// Kills every VMM left in the run dirs under `run_root` and removes the dirs (for tests
/// that must leave nothing behind, even when they fail).
pub fn reap_leftovers(run_root: &Path) {
    for e in std::fs::read_dir(run_root).into_iter().flatten().flatten() {
        reap(&e.path());
    }
}

/// Kills the VMM a previous run of this agent left in `dir`, if one runs there, and
/// removes the run dir. Only a PID from our own pid file that is that run dir's VMM is
/// touched.
fn reap(dir: &Path) {
    if let Some(pid) = hearth_vmm::kill_leftover(dir) {
        tracing::warn!(pid, dir = %dir.display(), "killed a VM left by a previous agent run");
    }
    let _ = std::fs::remove_dir_all(dir);
}
