//! The one task that owns a VM: its VMM process, its guest channel and its state.
//!
//! ```text
//!            Start                 guest answers          Pause
//! creating ───────▶ starting ─────────────────▶ running ◀─────▶ paused
//! stopped  ───────▶    │  QEMU dies / no answer     │  Resume      │ Stop (resumes first)
//! failed   ───────▶    ▼                            ▼              ▼
//!                    failed ◀── QEMU dies ──── stopping ──▶ stopped
//! ```
//!
//! A running VM's run dir also holds `vm.json` (its spec and how it was launched), so an
//! agent that restarts — even after `kill -9` — takes over the VMMs still running there
//! ([`spawn_adopted`]) instead of booting them again.
//!
//! Commands arrive on a bounded mailbox and run one at a time; meanwhile the task also
//! watches the VMM's exit and the boot in flight, so a VM whose QEMU dies becomes `failed`
//! (with the reason and the serial tail) without anyone asking. Every state change is
//! published on a watch channel and pushed to the manager.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_agent_api::pb;
use hearth_guest_proto::client::GuestClient;
use hearth_guest_proto::msg::{NetConfig, Request};
use hearth_types::vm::VmState;
use hearth_vmm::{Accel, Hypervisor, VmConfig, VmControl, VmmKind};
use tokio::sync::{mpsc, oneshot, watch};

use super::{files, state_of, Command, OwnerHandle, VmError, VmHost};
use crate::net::{Forward, Nic};
use hearth_types::network::NetworkKind;
use std::collections::BTreeMap;

/// Lines of the serial log kept with a failure.
const TAIL_LINES: usize = 30;
/// Bounds of the graceful stop steps.
const GUEST_SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
const ACPI_WAIT: Duration = Duration::from_secs(5);
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How often a guest channel that refuses is asked again while the guest boots.
const GUEST_RETRY: Duration = Duration::from_millis(10);

/// What the manager asks the agent to run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VmSpec {
    pub id: String,
    pub name: String,
    pub image: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// The VM's own writable disk; 0 for none.
    pub disk_mib: u64,
    /// Volumes to attach, in order.
    pub volumes: Vec<VolumeSpec>,
    /// `user` for QEMU user-mode networking with `ports` forwarded; `managed` for a TAP on
    /// the managed network `nic`, with `ports` proxied by the agent; else no NIC.
    pub network: String,
    pub nic: Option<Nic>,
    pub ports: Vec<PortSpec>,
    /// A script the guest runs once, after its first boot.
    pub user_data: String,
    /// `qemu`, `firecracker` or `cloud-hypervisor`; empty: this host's default.
    #[serde(default)]
    pub vmm: String,
}

/// Bounds of user data: its size and how long it may run.
const MAX_USER_DATA: usize = 64 << 10;
const USER_DATA_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VolumeSpec {
    pub id: String,
    pub name: String,
    pub size_mib: u64,
}

/// At most this many volumes per VM.
const MAX_VOLUMES: usize = 16;

/// (protocol, host port on 127.0.0.1, guest port).
pub type PortSpec = (String, u16, u16);

impl VmSpec {
    /// Whether `ports` can be this VM's forwards: TCP or UDP with user-mode networking, TCP
    /// on a managed network, none without a network; no host port twice.
    pub fn check_ports(&self, ports: &[PortSpec]) -> Result<(), VmError> {
        if !ports.is_empty() && !matches!(self.network.as_str(), "user" | "managed") {
            return Err(VmError::Invalid("port forwards need a network".into()));
        }
        for (i, (proto, host, guest)) in ports.iter().enumerate() {
            let managed = self.network == "managed";
            if !matches!(proto.as_str(), "tcp" | "udp")
                || (managed && proto != "tcp")
                || *host == 0
                || *guest == 0
                || ports[..i].iter().any(|(p, h, _)| p == proto && h == host)
            {
                return Err(VmError::Invalid(format!(
                    "bad port forward {proto}:{host}->{guest}"
                )));
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), VmError> {
        super::plain_id("VM", &self.id)?;
        if !self.vmm.is_empty() {
            self.vmm.parse::<VmmKind>().map_err(VmError::Invalid)?;
        }
        if !(1..=64).contains(&self.vcpus) {
            return Err(VmError::Invalid("vcpus must be 1–64".into()));
        }
        if !(64..=1024 * 1024).contains(&self.memory_mib) {
            return Err(VmError::Invalid("memory_mib must be 64–1048576".into()));
        }
        if self.disk_mib != 0 && !(16..=1024 * 1024).contains(&self.disk_mib) {
            return Err(VmError::Invalid(
                "disk_mib must be 0 (no disk) or 16–1048576".into(),
            ));
        }
        if self.volumes.len() > MAX_VOLUMES {
            return Err(VmError::Invalid(format!(
                "at most {MAX_VOLUMES} volumes per VM"
            )));
        }
        if self.user_data.len() > MAX_USER_DATA {
            return Err(VmError::Invalid(format!(
                "user data must be at most {MAX_USER_DATA} bytes"
            )));
        }
        match (self.network.as_str(), &self.nic) {
            ("" | "none" | "user", None) | ("managed", Some(_)) => {}
            ("managed", None) => {
                return Err(VmError::Invalid("network managed needs a NIC".into()));
            }
            (other, _) => {
                return Err(VmError::Invalid(format!(
                    "network must be none, user or managed (with a NIC), got {other:?}"
                )));
            }
        }
        self.check_ports(&self.ports)?;
        for v in &self.volumes {
            if !hearth_types::is_plain_id(&v.id)
                || hearth_types::vm::check_name("volume", &v.name).is_err()
                || !(16..=1024 * 1024).contains(&v.size_mib)
            {
                return Err(VmError::Invalid(format!(
                    "volume {:?} ({}, {} MiB) is not a valid volume",
                    v.name, v.id, v.size_mib
                )));
            }
        }
        Ok(())
    }
}

impl TryFrom<pb::VmSpec> for VmSpec {
    type Error = VmError;
    fn try_from(s: pb::VmSpec) -> Result<Self, VmError> {
        let nic = |n: pb::Nic| Nic::try_from(n).map_err(VmError::Invalid);
        Ok(VmSpec {
            id: s.id,
            name: s.name,
            image: s.image,
            vcpus: s.vcpus,
            memory_mib: s.memory_mib,
            disk_mib: s.disk_mib,
            volumes: s
                .volumes
                .into_iter()
                .map(|v| VolumeSpec {
                    id: v.id,
                    name: v.name,
                    size_mib: v.size_mib,
                })
                .collect(),
            network: s.network,
            nic: s.nic.map(nic).transpose()?,
            user_data: s.user_data,
            ports: port_specs(s.ports),
            vmm: s.vmm,
        })
    }
}

/// Port forwards as the manager sends them (a port out of range becomes 0, refused later).
pub fn port_specs(ports: Vec<pb::PortForward>) -> Vec<PortSpec> {
    let port = |n: u32| u16::try_from(n).unwrap_or(0);
    ports
        .into_iter()
        .map(|p| (p.protocol, port(p.host_port), port(p.guest_port)))
        .collect()
}

struct Process {
    control: Arc<dyn VmControl>,
    exit: oneshot::Receiver<String>,
    /// The agent's port forwards into a guest on a managed network, by host port; they
    /// end with it.
    forwards: BTreeMap<u16, Forward>,
}

/// What a run dir records of the VM running there, for an agent that restarts.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct RunRecord {
    pub spec: VmSpec,
    /// The VMM that runs it (records from before there was a choice are QEMU's).
    #[serde(default = "qemu")]
    pub vmm: String,
    pub accel: String,
    pub restored: bool,
    pub started_at_ms: i64,
}

fn qemu() -> String {
    VmmKind::Qemu.name().into()
}

impl RunRecord {
    /// The driver kind that runs the recorded VM.
    pub fn vmm_kind(&self) -> VmmKind {
        self.vmm.parse().unwrap_or(VmmKind::Qemu)
    }

    const FILE: &'static str = "vm.json";

    pub fn read(run_dir: &std::path::Path) -> Option<RunRecord> {
        let text = std::fs::read(run_dir.join(Self::FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn write(&self, run_dir: &std::path::Path) {
        let tmp = run_dir.join("vm.json.tmp");
        let written = serde_json::to_vec(self)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, run_dir.join(Self::FILE)));
        if let Err(e) = written {
            tracing::warn!(vm = %self.spec.id, error = %e, "recording the run; a restarted agent will not take this VM over");
        }
    }
}

struct Owner {
    host: Arc<VmHost>,
    spec: VmSpec,
    run_dir: PathBuf,
    status: watch::Sender<pb::VmStatus>,
    guest: watch::Sender<Option<GuestClient>>,
    process: Option<Process>,
    /// The driver of the VMM that runs (or last ran) the VM.
    hypervisor: Option<Arc<dyn Hypervisor>>,
    /// What the running VMM was launched with (a snapshot records its profile).
    config: Option<VmConfig>,
    boot: Option<oneshot::Receiver<Result<GuestClient, String>>>,
    launched_at: Instant,
    /// The running VMM was restored from a snapshot, not booted.
    restored: bool,
    /// The guest connection in flight is to a VM that already runs (taken over after an
    /// agent restart, or resumed after one), not a boot.
    reconnecting: bool,
}

fn new_owner(
    host: Arc<VmHost>,
    spec: &VmSpec,
    run_dir: PathBuf,
    mailbox: usize,
) -> (Owner, mpsc::Sender<Command>, mpsc::Receiver<Command>) {
    let (tx, rx) = mpsc::channel(mailbox);
    let initial = pb::VmStatus {
        id: spec.id.clone(),
        state: VmState::Creating.as_str().into(),
        vmm: spec.vmm.clone(),
        observed_at_ms: now_ms(),
        ..Default::default()
    };
    let (status, _) = watch::channel(initial);
    let (guest, _) = watch::channel(None);
    let owner = Owner {
        host,
        spec: spec.clone(),
        run_dir: run_dir.clone(),
        status,
        guest,
        process: None,
        hypervisor: None,
        config: None,
        boot: None,
        launched_at: Instant::now(),
        restored: false,
        reconnecting: false,
    };
    (owner, tx, rx)
}

pub(super) fn spawn(
    host: Arc<VmHost>,
    spec: &VmSpec,
    run_dir: PathBuf,
    mailbox: usize,
) -> OwnerHandle {
    let (owner, tx, rx) = new_owner(host, spec, run_dir, mailbox);
    let handle = owner.handle(tx);
    tokio::spawn(owner.run(rx));
    handle
}

/// The owner of a VM whose VMM a previous run of this agent started and left running.
pub(super) async fn spawn_adopted(
    host: Arc<VmHost>,
    record: RunRecord,
    run_dir: PathBuf,
    adopted: hearth_vmm::Adopted,
    hypervisor: Arc<dyn Hypervisor>,
    mailbox: usize,
) -> OwnerHandle {
    let (mut owner, tx, rx) = new_owner(host, &record.spec, run_dir, mailbox);
    owner.hypervisor = Some(hypervisor);
    owner.take_over(record, adopted).await;
    let handle = owner.handle(tx);
    tokio::spawn(owner.run(rx));
    handle
}

/// Tells a restored guest its new identity: hostname, fresh entropy, the time, and on a
/// managed network its own MAC and address.
async fn tell_restored(
    client: &GuestClient,
    hostname: String,
    net: Option<NetConfig>,
) -> Result<(), String> {
    use base64::Engine;
    let mut entropy = [0u8; 64];
    rand::fill(&mut entropy[..]);
    let req = Request::Restored {
        hostname,
        entropy: base64::engine::general_purpose::STANDARD.encode(entropy),
        now_ms: now_ms(),
        net,
    };
    match tokio::time::timeout(Duration::from_secs(10), client.call(&req)).await {
        Ok(Ok(hearth_guest_proto::msg::Response::Ok)) => Ok(()),
        Ok(Ok(other)) => Err(format!("the restored guest answered {other:?}")),
        Ok(Err(e)) => Err(format!("telling the guest it was restored: {e}")),
        Err(_) => Err("the restored guest did not take its new identity within 10 s".into()),
    }
}

/// Runs the VM's user data in the guest, in the background, unless it already ran there:
/// a marker under /var/lib/hearth (on the VM's disk, when it has one) remembers. Its output
/// goes to /var/log/hearth-user-data.log, its exit code to the marker.
fn run_user_data(vm: String, guest: GuestClient, script: &str) {
    const WRAPPER: &str = "m=/var/lib/hearth/user-data.done; [ -e $m ] && exit 0; \
        mkdir -p /var/lib/hearth /var/log; sh -s > /var/log/hearth-user-data.log 2>&1; \
        echo $? > $m";
    let req = Request::Exec {
        argv: vec!["sh".into(), "-c".into(), WRAPPER.into()],
        env: Default::default(),
        cwd: Some("/root".into()),
        timeout_ms: USER_DATA_TIMEOUT.as_millis() as u64,
        pty: None,
    };
    let script = script.as_bytes().to_vec();
    tokio::spawn(async move {
        let bound = USER_DATA_TIMEOUT + Duration::from_secs(10);
        match tokio::time::timeout(bound, guest.exec(&req, &script, 64 << 10)).await {
            Ok(Ok(out)) if out.code == 0 => tracing::info!(%vm, "user data ran"),
            Ok(Ok(out)) => tracing::warn!(%vm, code = out.code, "user data wrapper failed"),
            Ok(Err(e)) => tracing::warn!(%vm, error = %e, "user data did not run"),
            Err(_) => tracing::warn!(%vm, "user data did not finish in time"),
        }
    });
}

/// Starts an imported image's command (entrypoint and cmd) in the guest, in its own session,
/// with the image's environment and working dir; its output goes to
/// /var/log/hearth-entrypoint.log. The image needs a `/bin/sh`.
fn run_image_command(vm: String, guest: GuestClient, run: crate::image::oci::ImageRun) {
    const WRAPPER: &str = "cd \"$1\" 2>/dev/null; shift; mkdir -p /var/log; \
        if command -v setsid >/dev/null 2>&1; then \
          setsid \"$@\" </dev/null >/var/log/hearth-entrypoint.log 2>&1 & \
        else \"$@\" </dev/null >/var/log/hearth-entrypoint.log 2>&1 & fi";
    let mut argv = vec![
        "/bin/sh".into(),
        "-c".into(),
        WRAPPER.into(),
        "entrypoint".into(),
        run.workdir.unwrap_or_else(|| "/".into()),
    ];
    argv.extend(run.argv);
    let req = Request::Exec {
        argv,
        env: run
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        cwd: None,
        timeout_ms: 30_000,
        pty: None,
    };
    tokio::spawn(async move {
        match tokio::time::timeout(Duration::from_secs(40), guest.exec(&req, &[], 64 << 10)).await {
            Ok(Ok(out)) if out.code == 0 => tracing::info!(%vm, "image command started"),
            Ok(Ok(out)) => tracing::warn!(%vm, code = out.code, "image command did not start"),
            Ok(Err(e)) => tracing::warn!(%vm, error = %e, "image command did not start"),
            Err(_) => tracing::warn!(%vm, "image command did not start in time"),
        }
    });
}

/// A stable, locally administered MAC for a VM's NIC.
fn mac_of(vm_id: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(vm_id.as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn exited(p: &mut Option<Process>) -> String {
    match p {
        Some(p) => (&mut p.exit).await.unwrap_or_else(|_| "unknown".into()),
        None => std::future::pending().await,
    }
}

async fn booted(
    b: &mut Option<oneshot::Receiver<Result<GuestClient, String>>>,
) -> Result<GuestClient, String> {
    match b {
        Some(rx) => rx.await.unwrap_or_else(|_| Err("boot task ended".into())),
        None => std::future::pending().await,
    }
}

impl Owner {
    fn handle(&self, tx: mpsc::Sender<Command>) -> OwnerHandle {
        OwnerHandle {
            tx,
            status: self.status.subscribe(),
            guest: self.guest.subscribe(),
            run_dir: self.run_dir.clone(),
        }
    }

    /// Takes over a VMM left running by a previous run of this agent: its state from the
    /// VMM, the agent's own port forwards made again, the guest channel reconnected in the
    /// background (the guest agent reopens its port when the host side goes away).
    async fn take_over(&mut self, record: RunRecord, adopted: hearth_vmm::Adopted) {
        let accel = if record.accel == Accel::Kvm.name() {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        let launched = adopted.launched;
        let (forwards, failed) = self.make_forwards().await;
        for (port, e) in failed {
            tracing::warn!(vm = %self.spec.id, port, error = %e, "a port forward could not be made again");
        }
        self.config = self
            .config_for(&self.spec, None, record.vmm_kind())
            .ok()
            .map(|mut c| {
                c.accel = accel;
                c
            });
        self.restored = record.restored;
        self.process = Some(Process {
            control: launched.control,
            exit: launched.exit,
            forwards,
        });
        let state = if adopted.paused {
            VmState::Paused
        } else {
            VmState::Running
        };
        self.status.send_modify(|s| {
            s.state = state.as_str().into();
            s.vmm = record.vmm.clone();
            s.pid = launched.pid;
            s.accelerator = accel.name().into();
            s.started_at_ms = record.started_at_ms;
            s.observed_at_ms = now_ms();
        });
        let _ = self.host.reports.try_send(self.status.borrow().clone());
        tracing::info!(vm = %self.spec.id, name = %self.spec.name, pid = launched.pid, %state, "took over a VM left running by the previous agent");
        if !adopted.paused {
            self.reconnecting = true;
            self.connect_guest(false);
        }
    }

    /// On a managed network, the agent's own forwards of the VM's ports into its guest
    /// (QEMU forwards them on user networking), and each port that could not be taken, with
    /// why.
    async fn make_forwards(&self) -> (BTreeMap<u16, Forward>, Vec<(u16, String)>) {
        let (mut made, mut failed) = (BTreeMap::new(), Vec::new());
        if let Some(nic) = &self.spec.nic {
            for (_, host_port, guest_port) in &self.spec.ports {
                match self
                    .host
                    .net
                    .forward(*host_port, (nic.ip, *guest_port).into())
                    .await
                {
                    Ok(f) => {
                        made.insert(*host_port, f);
                    }
                    Err(e) => failed.push((*host_port, e)),
                }
            }
        }
        (made, failed)
    }

    /// Records the run, for a restarted agent to take over.
    fn record_run(&self) {
        let s = self.status.borrow();
        RunRecord {
            spec: self.spec.clone(),
            vmm: s.vmm.clone(),
            accel: s.accelerator.clone(),
            restored: self.restored,
            started_at_ms: s.started_at_ms,
        }
        .write(&self.run_dir);
    }

    /// Connects to the guest agent in the background (telling a restored guest who it now
    /// is); [`Owner::on_boot`] gets the outcome.
    fn connect_guest(&mut self, restored: bool) {
        let Some(control) = self.process.as_ref().map(|p| p.control.clone()) else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        self.boot = Some(rx);
        let timeout = self.host.boot_timeout;
        let hostname = self.spec.name.clone();
        let net = self
            .config
            .as_ref()
            .and_then(|c| c.tap.as_ref())
            .map(|t| NetConfig {
                mac: t.mac.clone(),
                address: t.address.clone(),
                gateway: t.gateway.clone(),
                dns: t.dns.clone(),
            });
        tokio::spawn(async move {
            let res = async {
                // A vsock refuses connections until the guest listens (QEMU's socket
                // takes them at once): ask again until the boot bound.
                let deadline = tokio::time::Instant::now() + timeout;
                let io = loop {
                    match control.guest_stream().await {
                        Ok(io) => break io,
                        Err(_) if tokio::time::Instant::now() < deadline => {
                            tokio::time::sleep(GUEST_RETRY).await
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                };
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let client = GuestClient::connect(io, left)
                    .await
                    .map_err(|e| e.to_string())?;
                if restored {
                    tell_restored(&client, hostname, net).await?;
                }
                Ok(client)
            }
            .await;
            let _ = tx.send(res);
        });
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => break,
                    Some(Command::Delete(reply)) => {
                        self.kill().await;
                        if self.spec.nic.is_some() {
                            self.host.net.detach(&self.spec.id).await;
                        }
                        let _ = std::fs::remove_dir_all(&self.run_dir);
                        if let Some(dir) = self.host.files.disk(&self.spec.id).parent() {
                            let _ = std::fs::remove_dir_all(dir);
                        }
                        let _ = reply.send(Ok(()));
                        break;
                    }
                    Some(cmd) => self.on_command(cmd).await,
                },
                how = exited(&mut self.process) => self.on_exit(how),
                res = booted(&mut self.boot) => {
                    self.boot = None;
                    self.on_boot(res).await;
                }
            }
        }
        // Mailbox closed or VM deleted: nothing may outlive the owner.
        self.kill().await;
    }

    fn state(&self) -> VmState {
        state_of(&self.status.borrow())
    }

    fn set(&self, state: VmState, reason: Option<String>) {
        let tail = if state == VmState::Failed {
            hearth_vmm::qemu::serial_tail(&self.run_dir.join("serial.log"), TAIL_LINES)
        } else {
            String::new()
        };
        self.status.send_modify(|s| {
            s.state = state.as_str().into();
            s.reason = reason.unwrap_or_default();
            s.console_tail = tail;
            s.observed_at_ms = now_ms();
            if state == VmState::Starting {
                s.started_at_ms = now_ms();
                s.boot_ms = 0;
            }
            if state == VmState::Running {
                s.boot_ms = self.launched_at.elapsed().as_millis() as u64;
            }
            if !matches!(
                state,
                VmState::Starting | VmState::Running | VmState::Paused
            ) {
                s.pid = 0;
            }
        });
        let _ = self.host.reports.try_send(self.status.borrow().clone());
        tracing::info!(vm = %self.spec.id, name = %self.spec.name, %state, "VM state");
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Start(spec, reply) => {
                let r = self.start(spec).await;
                let _ = reply.send(r);
            }
            Command::Stop(force, reply) => {
                let r = self.stop(force).await;
                let _ = reply.send(r);
            }
            Command::Reboot(reply) => {
                let r = match self.stop(false).await {
                    Ok(_) => self.start(self.spec.clone()).await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            Command::Pause(pause, reply) => {
                let r = self.pause(pause).await;
                let _ = reply.send(r);
            }
            Command::Snapshot(id, reply) => {
                let r = self.snapshot(id).await;
                let _ = reply.send(r);
            }
            Command::Ports(ports, reply) => {
                let r = self.set_ports(ports).await;
                let _ = reply.send(r);
            }
            Command::Restore(spec, snapshot, reply) => {
                let r = self.restore(spec, snapshot).await;
                let _ = reply.send(r);
            }
            Command::Delete(_) => unreachable!("handled in run"),
        }
    }

    async fn start(&mut self, spec: VmSpec) -> Result<pb::VmStatus, VmError> {
        let state = self.state();
        if matches!(state, VmState::Starting | VmState::Running) {
            return Ok(self.status.borrow().clone()); // already what was asked
        }
        if !state.can_become(VmState::Starting) {
            return Err(VmError::WrongState { state, op: "start" });
        }
        let hypervisor = self
            .host
            .vmms
            .get(&spec.vmm)
            .await
            .map_err(VmError::Invalid)?;
        let config = self.config_for(&spec, None, hypervisor.kind())?;
        self.spec = spec;
        if let Some(disk) = &config.disk {
            files::ensure_disk(disk, self.spec.disk_mib).await?;
            files::grow_disk(disk, self.spec.disk_mib).await?;
        }
        for (v, disk) in self.spec.volumes.iter().zip(&config.volumes) {
            files::ensure_disk(&disk.path, v.size_mib).await?;
            files::grow_disk(&disk.path, v.size_mib).await?;
        }
        self.launch(hypervisor, config, false).await
    }

    /// The configuration that runs `spec` here on a VMM of `kind` (restoring the state
    /// saved in `incoming` if given).
    fn config_for(
        &self,
        spec: &VmSpec,
        incoming: Option<std::path::PathBuf>,
        kind: VmmKind,
    ) -> Result<VmConfig, VmError> {
        let image =
            self.host.images.get(&spec.image).ok_or_else(|| {
                VmError::Invalid(format!("this host has no image {:?}", spec.image))
            })?;
        Ok(VmConfig {
            kernel: image.kernel,
            initrd: image.initrd,
            rootfs: image.rootfs,
            disk: (spec.disk_mib > 0).then(|| self.host.files.disk(&spec.id)),
            incoming,
            volumes: spec
                .volumes
                .iter()
                .map(|v| hearth_vmm::VolumeDisk {
                    name: v.name.clone(),
                    path: self.host.files.volume(&v.id),
                })
                .collect(),
            user_net: (spec.network == "user").then(|| hearth_vmm::UserNet {
                mac: mac_of(&spec.id),
                forwards: spec.ports.clone(),
            }),
            tap: spec.nic.as_ref().map(|nic| hearth_vmm::TapNet {
                ifname: crate::net::tap_name(&spec.id),
                netns: self.host.net.netns_file(),
                mac: nic.mac.clone(),
                address: format!("{}/{}", nic.ip, nic.prefix),
                gateway: (nic.kind != NetworkKind::Isolated).then(|| nic.gateway.to_string()),
                dns: self
                    .host
                    .net
                    .dns_for(nic)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            }),
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            // Only QEMU has a fallback.
            accel: if kind.needs_kvm() {
                Accel::Kvm
            } else {
                self.host.accel.choose()
            },
            hostname: spec.name.clone(),
            run_dir: self.run_dir.clone(),
        })
    }

    /// Starts the VMM and, in the background, connects to the guest agent (telling a
    /// restored guest who it now is). The VM is `starting` until the guest answers.
    async fn launch(
        &mut self,
        hypervisor: Arc<dyn Hypervisor>,
        config: VmConfig,
        restored: bool,
    ) -> Result<pb::VmStatus, VmError> {
        let accel = config.accel;
        self.restored = restored;
        let _ = std::fs::remove_dir_all(&self.run_dir);
        self.launched_at = Instant::now();
        if let Some(nic) = &self.spec.nic {
            if let Err(e) = self.host.net.attach(&self.spec.id, nic).await {
                self.set(VmState::Failed, Some(format!("no network: {e}")));
                return Ok(self.status.borrow().clone());
            }
        }
        let vmm = hypervisor.kind().name();
        self.status.send_modify(|s| s.vmm = vmm.into());
        self.hypervisor = Some(hypervisor.clone());
        let launched = match hypervisor.launch(&config).await {
            Ok(l) => l,
            Err(e) => {
                self.set(VmState::Failed, Some(format!("the VMM did not start: {e}")));
                return Ok(self.status.borrow().clone());
            }
        };
        let (forwards, failed) = self.make_forwards().await;
        if let Some((_, e)) = failed.into_iter().next() {
            launched.control.kill();
            let _ = tokio::time::timeout(KILL_WAIT, launched.exit).await;
            self.set(VmState::Failed, Some(e));
            return Ok(self.status.borrow().clone());
        }
        self.status.send_modify(|s| {
            s.pid = launched.pid;
            s.accelerator = accel.name().into();
        });
        self.process = Some(Process {
            control: launched.control,
            exit: launched.exit,
            forwards,
        });
        self.config = Some(config);
        self.reconnecting = false;
        self.connect_guest(restored);
        self.set(VmState::Starting, None);
        self.record_run();
        if accel == Accel::Tcg {
            tracing::debug!(vm = %self.spec.id, "booting under TCG");
        }
        Ok(self.status.borrow().clone())
    }

    /// Saves the VM's memory and disk as snapshot `id`. A running VM is paused for the
    /// save and runs on afterwards; a paused one stays paused.
    async fn snapshot(&mut self, id: String) -> Result<pb::SnapshotInfo, VmError> {
        let state = self.state();
        if !matches!(state, VmState::Running | VmState::Paused) {
            return Err(VmError::WrongState {
                state,
                op: "snapshot",
            });
        }
        let (Some(p), Some(config), Some(hypervisor)) =
            (&self.process, &self.config, &self.hypervisor)
        else {
            return Err(VmError::Failed("the VM has no VMM running".into()));
        };
        let (control, config, hypervisor) = (p.control.clone(), config.clone(), hypervisor.clone());
        if !config.volumes.is_empty() {
            // Their contents would not match a restored guest's view of them.
            return Err(VmError::Incompatible(
                "a VM with volumes attached cannot be snapshotted yet: stop it and detach them first"
                    .into(),
            ));
        }
        let files = &self.host.files;
        if files.snapshot(&id).0.exists() {
            return Err(VmError::Invalid(format!("snapshot {id} already exists")));
        }
        let partial = files.partial(&id);
        let _ = std::fs::remove_dir_all(&partial.0);
        files::private_dir(&partial.0)?;
        let started = Instant::now();
        let saved = async {
            if state == VmState::Running {
                control
                    .pause()
                    .await
                    .map_err(|e| VmError::Failed(format!("pausing for the snapshot: {e}")))?;
            }
            control
                .save(&partial.0)
                .await
                .map_err(|e| VmError::Failed(format!("saving the VM's state: {e}")))?;
            if let Some(disk) = &config.disk {
                files::copy_disk(disk, &partial.disk()).await?;
            }
            Ok::<_, VmError>(())
        }
        .await;
        if state == VmState::Running {
            if let Err(e) = control.resume().await {
                tracing::error!(vm = %self.spec.id, error = %e, "resuming after a snapshot failed");
            }
        }
        let save_ms = started.elapsed().as_millis() as u64;
        let meta = files::Meta {
            profile: hypervisor.profile(&config, &hypervisor.version().await),
            vm_id: self.spec.id.clone(),
            image: self.spec.image.clone(),
            disk_mib: self.spec.disk_mib,
            taken_at_ms: now_ms(),
        };
        let published = saved.and_then(|()| {
            partial
                .write_meta(&meta)
                .and_then(|()| files.publish(&partial, &id))
                .map_err(|e| VmError::Failed(format!("writing snapshot {id}: {e}")))
        });
        if let Err(e) = published {
            let _ = std::fs::remove_dir_all(&partial.0);
            return Err(e);
        }
        let dir = files.snapshot(&id);
        tracing::info!(vm = %self.spec.id, snapshot = %id, save_ms, "snapshot taken");
        Ok(pb::SnapshotInfo {
            id,
            memory_bytes: files::allocated(&dir.0).saturating_sub(files::allocated(&dir.disk())),
            disk_bytes: files::allocated(&dir.disk()),
            save_ms,
            profile_json: serde_json::to_string(&meta.profile).unwrap_or_default(),
        })
    }

    /// Runs `spec` from snapshot `id`: checks that the snapshot fits what this host would
    /// launch (refusing with every difference), discards the current run if there is one,
    /// puts the snapshot's disk in place and loads its state.
    async fn restore(&mut self, spec: VmSpec, id: String) -> Result<pb::VmStatus, VmError> {
        let state = self.state();
        if matches!(state, VmState::Stopping | VmState::Deleting) {
            return Err(VmError::WrongState {
                state,
                op: "restore",
            });
        }
        let dir = self.host.files.snapshot(&id);
        let meta = dir.read_meta(&id)?;
        // The snapshot's own VMM, unless the spec names one (a mismatch is then refused).
        let vmm = match spec.vmm.as_str() {
            "" => meta.profile.vmm.as_str(),
            named => named,
        };
        let hypervisor = self.host.vmms.get(vmm).await.map_err(|why| {
            VmError::Incompatible(format!("snapshot {id} cannot be restored here: {why}"))
        })?;
        let config = self.config_for(&spec, Some(dir.0.clone()), hypervisor.kind())?;
        let here = hypervisor.profile(&config, &hypervisor.version().await);
        let differences = here.mismatches(&meta.profile);
        if !differences.is_empty() {
            return Err(VmError::Incompatible(format!(
                "snapshot {id} cannot be restored here: {}",
                differences.join("; ")
            )));
        }
        self.boot = None;
        self.kill().await;
        self.cleanup_sockets();
        self.spec = spec;
        if let Some(disk) = &config.disk {
            files::copy_disk(&dir.disk(), disk).await?;
        }
        if state != VmState::Creating {
            self.set(VmState::Stopped, Some(format!("restoring snapshot {id}")));
        }
        self.launch(hypervisor, config, true).await
    }

    async fn on_boot(&mut self, res: Result<GuestClient, String>) {
        if std::mem::take(&mut self.reconnecting) {
            match res {
                Ok(client) => {
                    self.guest.send_replace(Some(client));
                    tracing::info!(vm = %self.spec.id, "guest channel reconnected");
                }
                // The VM runs on; its guest channel is retried at the next resume.
                Err(e) => {
                    tracing::warn!(vm = %self.spec.id, error = %e, "the guest agent did not answer again")
                }
            }
            return;
        }
        if self.state() != VmState::Starting {
            return;
        }
        match res {
            Ok(client) => {
                if !self.spec.user_data.is_empty() {
                    run_user_data(self.spec.id.clone(), client.clone(), &self.spec.user_data);
                }
                // A restored guest's command runs on from where it was saved.
                let run = self.host.images.get(&self.spec.image).and_then(|i| i.run);
                if let (false, Some(run)) = (self.restored, run) {
                    if !run.argv.is_empty() {
                        run_image_command(self.spec.id.clone(), client.clone(), run);
                    }
                }
                self.guest.send_replace(Some(client));
                self.set(VmState::Running, None);
            }
            Err(e) => {
                self.kill().await;
                self.set(
                    VmState::Failed,
                    Some(format!(
                        "the guest agent did not become ready (bound: {} s): {e}; see the console tail",
                        self.host.boot_timeout.as_secs()
                    )),
                );
            }
        }
    }

    fn on_exit(&mut self, how: String) {
        self.process = None;
        self.boot = None;
        self.guest.send_replace(None);
        self.cleanup_sockets();
        let state = self.state();
        if how == "exit status: 0" && state == VmState::Running {
            self.set(VmState::Stopped, Some("the guest powered off".into()));
        } else if how == hearth_vmm::ADOPTED_EXIT && state == VmState::Running {
            // Not this agent's child: a guest power-off and a crash look the same.
            self.set(
                VmState::Stopped,
                Some("the VMM exited; its exit status is unknown (the VM was taken over after an agent restart)".into()),
            );
        } else if !matches!(state, VmState::Stopped | VmState::Failed) {
            self.set(
                VmState::Failed,
                Some(format!("the VMM exited unexpectedly ({how})")),
            );
        }
    }

    /// Makes `ports` the VM's forwards: at once if it runs (the agent's own forwards on a
    /// managed network, QEMU's on user-mode networking), and at every later start. When a
    /// port cannot be taken, the forwards in effect are kept as the VM's.
    async fn set_ports(&mut self, ports: Vec<PortSpec>) -> Result<pb::VmStatus, VmError> {
        let res = self.apply_ports(ports).await;
        if self.process.is_some() {
            self.record_run();
        }
        res
    }

    async fn apply_ports(&mut self, ports: Vec<PortSpec>) -> Result<pb::VmStatus, VmError> {
        self.spec.check_ports(&ports)?;
        if let Some(p) = self.process.as_mut() {
            let old = std::mem::take(&mut self.spec.ports);
            let (kept, removed): (Vec<_>, Vec<_>) =
                old.into_iter().partition(|o| ports.contains(o));
            self.spec.ports = kept;
            let added: Vec<_> = ports
                .iter()
                .filter(|n| !self.spec.ports.contains(n))
                .cloned()
                .collect();
            for (proto, host, guest) in removed {
                match &self.spec.nic {
                    Some(_) => {
                        p.forwards.remove(&host);
                    }
                    None => {
                        if let Err(e) = p.control.user_forward(false, &proto, host, guest).await {
                            self.spec.ports.push((proto, host, guest));
                            return Err(VmError::Failed(e.to_string()));
                        }
                    }
                }
            }
            for (proto, host, guest) in added {
                let taken = match &self.spec.nic {
                    Some(nic) => self
                        .host
                        .net
                        .forward(host, (nic.ip, guest).into())
                        .await
                        .map(|f| {
                            p.forwards.insert(host, f);
                        }),
                    None => p
                        .control
                        .user_forward(true, &proto, host, guest)
                        .await
                        .map_err(|e| e.to_string()),
                };
                taken.map_err(VmError::Incompatible)?;
                self.spec.ports.push((proto, host, guest));
            }
        }
        self.spec.ports = ports;
        Ok(self.status.borrow().clone())
    }

    /// Freezes a running VM, or lets a paused one run; asking for the state it is in is a
    /// no-op.
    async fn pause(&mut self, pause: bool) -> Result<pb::VmStatus, VmError> {
        let (from, to, op) = if pause {
            (VmState::Running, VmState::Paused, "pause")
        } else {
            (VmState::Paused, VmState::Running, "resume")
        };
        let state = self.state();
        if state == to {
            return Ok(self.status.borrow().clone());
        }
        if state != from {
            return Err(VmError::WrongState { state, op });
        }
        let control = self
            .process
            .as_ref()
            .map(|p| p.control.clone())
            .ok_or_else(|| VmError::Failed("the VM has no VMM running".into()))?;
        let done = if pause {
            control.pause().await
        } else {
            control.resume().await
        };
        done.map_err(|e| VmError::Failed(format!("the VMM did not {op}: {e}")))?;
        self.set(to, None);
        if !pause && self.guest.borrow().is_none() && self.boot.is_none() {
            // Taken over while paused: its guest channel is connected now it runs.
            self.reconnecting = true;
            self.connect_guest(false);
        }
        Ok(self.status.borrow().clone())
    }

    /// Graceful unless `force`: the guest agent's shutdown, then ACPI power-off, then kill,
    /// each step bounded. A paused VM is resumed first, so that it can shut down.
    async fn stop(&mut self, force: bool) -> Result<pb::VmStatus, VmError> {
        let state = self.state();
        if matches!(state, VmState::Stopped | VmState::Creating) {
            return Ok(self.status.borrow().clone());
        }
        if self.process.is_none() {
            // failed with nothing running: stopping just records the wish
            self.set(VmState::Stopped, None);
            return Ok(self.status.borrow().clone());
        }
        self.boot = None;
        if state == VmState::Paused && !force {
            if let Some(p) = &self.process {
                let _ = p.control.resume().await;
            }
        }
        self.set(VmState::Stopping, None);
        let mut done = false;
        if !force {
            let guest = self.guest.borrow().clone();
            if let Some(g) = guest {
                let asked = tokio::time::timeout(
                    Duration::from_secs(3),
                    g.call(&Request::Shutdown { reboot: false }),
                )
                .await;
                if matches!(asked, Ok(Ok(_))) {
                    done = self.wait_exit(GUEST_SHUTDOWN_WAIT).await;
                }
            }
            if !done {
                if let Some(p) = &self.process {
                    if p.control.power_off().await.is_ok() {
                        done = self.wait_exit(ACPI_WAIT).await;
                    }
                }
            }
            if !done {
                tracing::warn!(vm = %self.spec.id, "graceful stop did not finish; killing");
            }
        }
        if !done {
            self.kill().await;
        }
        self.process = None;
        self.config = None;
        self.guest.send_replace(None);
        self.cleanup_sockets();
        self.set(VmState::Stopped, None);
        Ok(self.status.borrow().clone())
    }

    async fn wait_exit(&mut self, bound: Duration) -> bool {
        let Some(p) = self.process.as_mut() else {
            return true;
        };
        tokio::time::timeout(bound, &mut p.exit).await.is_ok()
    }

    /// Kills the VMM, if one runs, and waits (bounded) for it to be reaped.
    async fn kill(&mut self) {
        if let Some(p) = self.process.as_mut() {
            p.control.kill();
            let _ = tokio::time::timeout(KILL_WAIT, &mut p.exit).await;
        }
        self.process = None;
        self.guest.send_replace(None);
    }

    fn cleanup_sockets(&self) {
        for f in ["guest.sock", "qmp.sock", "qemu.pid"] {
            let _ = std::fs::remove_file(self.run_dir.join(f));
        }
    }
}
