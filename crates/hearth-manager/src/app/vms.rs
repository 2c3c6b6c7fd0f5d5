//! VMs: validation, placement, the desired state a user asks for, and the observed state
//! agents report. Everything that happens on a host goes through that host's agent; the
//! manager only records.
//!
//! Observed state flows in two ways: each agent RPC answers with the VM's new status, and
//! agents push every change (`ReportVm`) and list all their VMs in each heartbeat. A status
//! is applied only when it is newer than the stored one, so the order they arrive in does
//! not matter.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Duration;

use hearth_agent_api::pb;
use hearth_store::{now_ms, to_time, Observed, VmRecord};
use hearth_types::api::Page;
use hearth_types::host::{Host, HostStatus, Resources};
use hearth_types::new_id;
use hearth_types::vm::{
    check_name, CreateVm, DesiredState, ExecResult, ExecVm, PortForward, Protocol, UpdateVm, Vm,
    VmMetrics, VmState,
};

use super::hosts::{HostClient, RegistryError};
use super::{page, page_limit, App};
use crate::error::{ApiError, ApiResult};

pub const DEFAULT_IMAGE: &str = "default";
const MAX_VCPUS: u32 = 64;
const MAX_MEMORY_MIB: u64 = 1024 * 1024;
/// The guest kernel and its initramfs do not boot in less (64 MiB panics).
const MIN_MEMORY_MIB: u64 = 128;
pub(crate) const DEFAULT_VCPUS: u32 = 1;
pub(crate) const DEFAULT_MEMORY_MIB: u64 = 256;
const DEFAULT_DISK_MIB: u64 = 1024;
/// The sizes of a VM's own disk (when it has one) and of a volume.
pub(crate) const DISK_MIB: std::ops::RangeInclusive<u64> = 16..=1024 * 1024;
const MAX_EXEC_STDIN: usize = 1 << 20;
const MAX_EXEC_ARGS: usize = 1024;
const MAX_WAIT_S: u64 = 600;
/// A VM its agent does not list is only started again when its record is older than this,
/// so a heartbeat that races a create or a start does not start it twice.
const MISSING_GRACE_MS: i64 = 5_000;

/// The guest's address on QEMU user-mode networking.
const USER_NET_IP: &str = "10.0.2.15";
const MAX_PORTS: usize = 32;
const MAX_USER_DATA: usize = 64 << 10;

pub(crate) fn ports_of(r: &VmRecord) -> Vec<PortForward> {
    serde_json::from_str(&r.ports).unwrap_or_default()
}

fn pb_ports(ports: &[PortForward]) -> Vec<pb::PortForward> {
    ports
        .iter()
        .map(|p| pb::PortForward {
            host_port: p.host_port.into(),
            guest_port: p.guest_port.into(),
            protocol: p.protocol.as_str().into(),
        })
        .collect()
}

/// Checks a VM's port forwards (`network` is `none`, `user` or a managed network's name);
/// the forwards must not take a host port another VM on `host` forwards.
pub(crate) fn check_ports(
    network: &str,
    ports: &[PortForward],
    others: &[VmRecord],
) -> ApiResult<()> {
    if !ports.is_empty() && network == "none" {
        return Err(ApiError::bad_request(
            "ports need a network: \"user\" or a managed one",
        ));
    }
    if ports.len() > MAX_PORTS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_PORTS} port forwards per VM"
        )));
    }
    for (i, p) in ports.iter().enumerate() {
        if p.host_port == 0 || p.guest_port == 0 {
            return Err(ApiError::bad_request("ports must be 1–65535"));
        }
        let taken = |q: &PortForward| q.host_port == p.host_port && q.protocol == p.protocol;
        if ports[..i].iter().any(taken) {
            return Err(ApiError::bad_request(format!(
                "host port {} is forwarded twice",
                p.host_port
            )));
        }
        if let Some(o) = others.iter().find(|o| ports_of(o).iter().any(taken)) {
            return Err(ApiError::Conflict(format!(
                "host port {}/{} is already forwarded to VM {}",
                p.host_port,
                p.protocol.as_str(),
                o.name
            )));
        }
    }
    Ok(())
}

fn vm_view(r: VmRecord) -> Vm {
    let ports = ports_of(&r);
    Vm {
        state: r.state.parse().unwrap_or(VmState::Failed),
        desired_state: if r.desired_state == "running" {
            DesiredState::Running
        } else {
            DesiredState::Stopped
        },
        id: r.id,
        name: r.name,
        host_id: r.host_id,
        image: r.image,
        vcpus: r.vcpus,
        memory_mib: r.memory_mib,
        disk_mib: r.disk_mib,
        ip: match r.network.as_str() {
            "user" => Some(USER_NET_IP.to_string()),
            _ => r.ip,
        },
        ports,
        network: r.network,
        network_id: r.network_id,
        mac: r.mac,
        network_note: r.network_note,
        vmm: r.vmm,
        accelerator: r.accelerator,
        reason: r.reason,
        console_tail: r.console_tail,
        boot_ms: r.boot_ms,
        created_at: to_time(r.created_at_ms),
        updated_at: to_time(r.updated_at_ms),
        started_at: r.started_at_ms.map(to_time),
        function_id: r.function_id,
        host_labels: serde_json::from_str(&r.host_labels).unwrap_or_default(),
    }
}

pub(crate) fn observed(s: &pb::VmStatus) -> Observed {
    let opt = |v: &str| (!v.is_empty()).then(|| v.to_string());
    Observed {
        state: s.state.clone(),
        reason: opt(&s.reason),
        console_tail: opt(&s.console_tail),
        accelerator: opt(&s.accelerator),
        boot_ms: (s.boot_ms > 0).then_some(s.boot_ms),
        started_at_ms: (s.started_at_ms > 0).then_some(s.started_at_ms),
        observed_at_ms: s.observed_at_ms,
    }
}

pub(crate) fn check_size(vcpus: u32, memory_mib: u64) -> ApiResult<()> {
    if !(1..=MAX_VCPUS).contains(&vcpus) {
        return Err(ApiError::bad_request(format!(
            "vcpus must be 1–{MAX_VCPUS}, got {vcpus}"
        )));
    }
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&memory_mib) {
        return Err(ApiError::bad_request(format!(
            "memory_mib must be {MIN_MEMORY_MIB}–{MAX_MEMORY_MIB}, got {memory_mib}"
        )));
    }
    Ok(())
}

/// Whether a VM with `vcpus` on `network` can run on `vmm` (`network` unknown yet: None).
pub(crate) fn check_vmm(vmm: &str, vcpus: u32, network: Option<&str>) -> ApiResult<()> {
    hearth_types::vm::vmm_fits(vmm, vcpus, network == Some("user")).map_err(ApiError::BadRequest)
}

/// Whether `host` reports `vmm` usable, else why not.
fn host_runs(host: &Host, vmm: &str) -> Result<(), String> {
    match host.vmms.iter().find(|v| v.name == vmm) {
        Some(v) if v.usable => Ok(()),
        Some(v) => Err(format!(
            "host {} cannot run {vmm}: {}",
            host.name,
            v.reason.as_deref().unwrap_or("not usable")
        )),
        None => Err(format!("host {} does not report {vmm}", host.name)),
    }
}

/// The VMM a VM placed on `host` gets when it names none: Firecracker where it is usable
/// and can run the VM, else QEMU.
fn default_vmm(host: &Host, vcpus: u32, network: &str) -> &'static str {
    let fc = "firecracker";
    if host_runs(host, fc).is_ok() && check_vmm(fc, vcpus, Some(network)).is_ok() {
        fc
    } else {
        "qemu"
    }
}

pub(crate) fn check_disk(disk_mib: u64) -> ApiResult<()> {
    if disk_mib != 0 && !DISK_MIB.contains(&disk_mib) {
        return Err(ApiError::bad_request(format!(
            "disk_mib must be 0 (no disk) or {}–{}, got {disk_mib}",
            DISK_MIB.start(),
            DISK_MIB.end()
        )));
    }
    Ok(())
}

pub(crate) fn check_user_data(user_data: &str) -> ApiResult<()> {
    if user_data.len() > MAX_USER_DATA {
        return Err(ApiError::bad_request(format!(
            "user_data must be at most {MAX_USER_DATA} bytes"
        )));
    }
    Ok(())
}

/// A new VM's record, placed on `host_id`; `starting` when `start`, else `stopped`.
pub(crate) fn new_record(
    name: String,
    host_id: &str,
    image: String,
    (vcpus, memory_mib, disk_mib): (u32, u64, u64),
    (network, ports): (super::networks::Attachment, &[PortForward]),
    start: bool,
    function_id: Option<&str>,
) -> VmRecord {
    let now = now_ms();
    VmRecord {
        id: new_id(),
        name,
        host_id: Some(host_id.to_string()),
        image,
        vcpus,
        memory_mib,
        disk_mib,
        network: network.network,
        network_id: network.network_id,
        ip: None,
        mac: network.mac,
        network_note: network.note,
        ports: serde_json::to_string(ports).unwrap_or_else(|_| "[]".into()),
        user_data: String::new(),
        vmm: "qemu".into(),
        state: if start { "starting" } else { "stopped" }.into(),
        desired_state: if start { "running" } else { "stopped" }.into(),
        reason: None,
        console_tail: None,
        accelerator: None,
        boot_ms: None,
        observed_at_ms: 0,
        created_at_ms: now,
        updated_at_ms: now,
        started_at_ms: None,
        function_id: function_id.map(str::to_string),
        host_labels: "{}".into(),
    }
}

/// Whether a VM holds its host's resources: one that should run does.
fn holds_resources(v: &VmRecord) -> bool {
    v.desired_state == "running"
}

impl App {
    /// vCPUs and memory promised on each host.
    pub(crate) async fn allocations(&self) -> ApiResult<HashMap<String, Resources>> {
        let mut out: HashMap<String, Resources> = HashMap::new();
        for v in self.store().all_vms().await? {
            if let (Some(h), true) = (&v.host_id, holds_resources(&v)) {
                let r = out.entry(h.clone()).or_default();
                r.vcpus += v.vcpus;
                r.memory_mib += v.memory_mib;
            }
        }
        Ok(out)
    }

    pub(crate) async fn allocated_on(&self, host_id: &str) -> ApiResult<Resources> {
        Ok(self
            .allocations()
            .await?
            .remove(host_id)
            .unwrap_or_default())
    }

    /// Whether a VM of this size fits on `h`: the MiB free there (before it), or why not.
    fn fits(&self, h: &Host, vcpus: u32, memory_mib: u64) -> Result<u64, String> {
        let cfg = self.config();
        let cpu_cap = (f64::from(h.capacity.vcpus) * cfg.cpu_overcommit).floor() as u32;
        let mem_cap = (h.capacity.memory_mib as f64 * cfg.memory_overcommit).floor() as u64;
        let cpu_free = cpu_cap.saturating_sub(h.allocated.vcpus);
        let mem_free = mem_cap.saturating_sub(h.allocated.memory_mib);
        if vcpus > h.capacity.vcpus {
            return Err(format!(
                "host {} has {} CPUs; a VM can have at most that many vCPUs",
                h.name, h.capacity.vcpus
            ));
        }
        if vcpus > cpu_free || memory_mib > mem_free {
            return Err(format!(
                "host {} has {cpu_free} vCPUs and {mem_free} MiB free",
                h.name
            ));
        }
        Ok(mem_free)
    }

    /// Picks a host for a new VM: up, not cordoned, has the image, runs `vmm` (when one is
    /// named), and has room; the one with the most free memory wins.
    pub(crate) async fn place(
        &self,
        req_host: Option<&str>,
        image: &str,
        vcpus: u32,
        memory_mib: u64,
        labels: &BTreeMap<String, String>,
        vmm: Option<&str>,
    ) -> ApiResult<Host> {
        let hosts = self.hosts_for_placement().await?;
        if !hosts
            .iter()
            .any(|h| h.images.iter().any(|i| i.name == image))
        {
            return Err(ApiError::NotFound(format!(
                "no host has an image named {image:?}; list images with `hearth image list`"
            )));
        }
        let mut reasons = Vec::new();
        let mut best: Option<(u64, Host)> = None;
        for h in hosts {
            if let Some(want) = req_host {
                if h.id != want && h.name != want {
                    continue;
                }
            }
            if h.status != HostStatus::Up {
                reasons.push(format!("host {} is {:?}", h.name, h.status).to_lowercase());
                continue;
            }
            if !h.images.iter().any(|i| i.name == image) {
                reasons.push(format!("host {} lacks image {image:?}", h.name));
                continue;
            }
            if let Some((k, v)) = labels.iter().find(|(k, v)| h.labels.get(*k) != Some(v)) {
                reasons.push(format!("host {} lacks the label {k}={v}", h.name));
                continue;
            }
            if let Some(Err(why)) = vmm.map(|v| host_runs(&h, v)) {
                reasons.push(why);
                continue;
            }
            let free = match self.fits(&h, vcpus, memory_mib) {
                Ok(free) => free,
                Err(why) => {
                    reasons.push(why);
                    continue;
                }
            };
            if best.as_ref().is_none_or(|(f, _)| free > *f) {
                best = Some((free, h));
            }
        }
        match (best, req_host) {
            (Some((_, h)), _) => Ok(h),
            (None, Some(want)) if reasons.is_empty() => {
                Err(ApiError::NotFound(format!("host {want:?} not found")))
            }
            (None, _) if reasons.is_empty() => Err(ApiError::Conflict(
                "no host is up: start an agent (`hearth up` runs one)".into(),
            )),
            (None, _) => Err(ApiError::Conflict(format!(
                "no host can take a VM with {vcpus} vCPUs and {memory_mib} MiB: {}",
                reasons.join("; ")
            ))),
        }
    }

    pub(crate) async fn agent_for(&self, v: &VmRecord) -> ApiResult<HostClient> {
        let host = v.host_id.as_deref().ok_or_else(|| {
            ApiError::Conflict(format!("VM {} is not placed on any host", v.name))
        })?;
        self.host_client(host).await
    }

    /// What the agent needs to run `v`, its volumes included.
    pub(crate) async fn spec(&self, v: &VmRecord) -> ApiResult<pb::VmSpec> {
        Ok(pb::VmSpec {
            id: v.id.clone(),
            name: v.name.clone(),
            image: v.image.clone(),
            vcpus: v.vcpus,
            memory_mib: v.memory_mib,
            disk_mib: v.disk_mib,
            volumes: self.volume_specs(&v.id).await?,
            network: if v.network_id.is_some() {
                "managed".into()
            } else {
                v.network.clone()
            },
            nic: self.nic(v).await?,
            user_data: v.user_data.clone(),
            ports: pb_ports(&ports_of(v)),
            vmm: v.vmm.clone(),
        })
    }

    pub async fn create_vm(&self, req: CreateVm) -> ApiResult<Vm> {
        self.create_vm_for(req, None).await
    }

    /// Creates a VM, for a user or (with `function_id`) for a function's pool.
    pub(crate) async fn create_vm_for(
        &self,
        req: CreateVm,
        function_id: Option<&str>,
    ) -> ApiResult<Vm> {
        check_name("VM", &req.name).map_err(ApiError::BadRequest)?;
        hearth_types::host::check_labels(&req.host_labels)
            .map_err(|e| ApiError::bad_request(format!("host_labels: {e}")))?;
        let vcpus = req.vcpus.unwrap_or(DEFAULT_VCPUS);
        let memory_mib = req.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
        check_size(vcpus, memory_mib)?;
        let disk_mib = req.disk_mib.unwrap_or(DEFAULT_DISK_MIB);
        check_disk(disk_mib)?;
        let image = req.image.unwrap_or_else(|| DEFAULT_IMAGE.to_string());
        if let Some(vmm) = &req.vmm {
            check_vmm(vmm, vcpus, req.network.as_deref())?;
        }
        if self.store().vm(&req.name).await.is_ok() {
            return Err(ApiError::Conflict(format!(
                "a VM named {:?} already exists; pick another name or delete it",
                req.name
            )));
        }
        let start = req.start.unwrap_or(true);
        let host = self
            .place(
                req.host_id.as_deref(),
                &image,
                vcpus,
                memory_mib,
                &req.host_labels,
                req.vmm.as_deref(),
            )
            .await?;
        let network = self
            .attachment(
                req.network.as_deref(),
                req.mac.as_deref(),
                &req.ports,
                &host,
            )
            .await?;
        check_ports(
            &network.network,
            &req.ports,
            &self.store().vms_on_host(&host.id).await?,
        )?;
        let vmm = match req.vmm {
            // The network as resolved on this host (a managed one may have become `user`).
            Some(vmm) => {
                check_vmm(&vmm, vcpus, Some(&network.network))?;
                vmm
            }
            None => default_vmm(&host, vcpus, &network.network).to_string(),
        };
        let user_data = req.user_data.unwrap_or_default();
        check_user_data(&user_data)?;
        let mut record = new_record(
            req.name,
            &host.id,
            image,
            (vcpus, memory_mib, disk_mib),
            (network, &req.ports),
            start,
            function_id,
        );
        record.user_data = user_data;
        record.vmm = vmm;
        record.host_labels =
            serde_json::to_string(&req.host_labels).unwrap_or_else(|_| "{}".into());
        self.insert_vm_with_address(&mut record).await?;
        if start {
            if let Err(e) = self.start_on_agent(&record).await {
                // Nothing runs: leave no half-created VM behind.
                let _ = self.store().delete_vm(&record.id).await;
                return Err(e);
            }
        }
        self.vm(&record.id).await
    }

    pub(crate) async fn start_on_agent(&self, v: &VmRecord) -> ApiResult<()> {
        let agent = self.agent_for(v).await?;
        let status = agent
            .rpc()
            .start_vm(agent.request(pb::StartVmRequest {
                spec: Some(self.spec(v).await?),
            }))
            .await?
            .into_inner();
        self.observe(&v.id, &observed(&status)).await?;
        Ok(())
    }

    pub async fn vm(&self, id_or_name: &str) -> ApiResult<Vm> {
        let mut v = vm_view(self.store().vm(id_or_name).await?);
        if let Some(host) = &v.host_id {
            if let Ok(h) = self.store().host(host).await {
                if let Some(ms) = self.silent_for_ms(&h) {
                    self.seen_from_silent_host(&mut v, ms);
                }
            }
        }
        Ok(v)
    }

    pub async fn list_vms(&self, cursor: Option<&str>, limit: Option<u32>) -> ApiResult<Page<Vm>> {
        let p = self.store().vms(cursor, page_limit(limit)?).await?;
        let silent = self.silent_hosts().await?;
        Ok(page(p, |r| {
            let mut v = vm_view(r);
            if let Some(ms) = v.host_id.as_ref().and_then(|h| silent.get(h)) {
                self.seen_from_silent_host(&mut v, *ms);
            }
            v
        }))
    }

    /// How a VM that should be running looks while its host has been silent for
    /// `silent_ms`: `unknown`, then `lost` after the bound. What the host reports when it
    /// returns replaces this.
    fn seen_from_silent_host(&self, v: &mut Vm, silent_ms: i64) {
        if !matches!(
            v.state,
            VmState::Starting | VmState::Running | VmState::Paused | VmState::Stopping
        ) {
            return;
        }
        let c = self.config();
        let lost = silent_ms - c.host_down_after_ms as i64 > c.vm_lost_after_ms as i64;
        v.state = if lost {
            VmState::Lost
        } else {
            VmState::Unknown
        };
        v.reason = Some(format!(
            "its host has not sent a heartbeat for {} s{}",
            silent_ms / 1000,
            if lost {
                "; when the host returns, its report decides (a VM that should run and no \
                 longer does is started again)"
            } else {
                ""
            }
        ));
    }

    pub async fn update_vm(&self, id_or_name: &str, req: UpdateVm) -> ApiResult<Vm> {
        let v = self.store().vm(id_or_name).await?;
        let name = req.name.unwrap_or_else(|| v.name.clone());
        check_name("VM", &name).map_err(ApiError::BadRequest)?;
        let vcpus = req.vcpus.unwrap_or(v.vcpus);
        let memory_mib = req.memory_mib.unwrap_or(v.memory_mib);
        check_size(vcpus, memory_mib)?;
        let disk_mib = req.disk_mib.unwrap_or(v.disk_mib);
        if disk_mib != v.disk_mib {
            check_disk(disk_mib)?;
            if v.disk_mib == 0 || disk_mib < v.disk_mib {
                return Err(ApiError::bad_request(format!(
                    "disk_mib can only grow a VM's disk ({} MiB now{})",
                    v.disk_mib,
                    if v.disk_mib == 0 { ": it has none" } else { "" }
                )));
            }
        }
        check_vmm(&v.vmm, vcpus, Some(&v.network))?;
        let state: VmState = v.state.parse().unwrap_or(VmState::Failed);
        let resized = vcpus != v.vcpus || memory_mib != v.memory_mib || disk_mib != v.disk_mib;
        if resized && !matches!(state, VmState::Stopped | VmState::Failed) {
            return Err(ApiError::Conflict(format!(
                "VM {} is {state}: stop it before changing its vCPUs, memory or disk",
                v.name
            )));
        }
        self.store()
            .update_vm_spec(&v.id, &name, vcpus, memory_mib, &v.desired_state)
            .await?;
        if disk_mib != v.disk_mib {
            self.store().update_vm_disk(&v.id, disk_mib).await?;
        }
        self.vm(&v.id).await
    }

    /// Adds a port forward to a VM: at once when it runs, and at its later starts.
    pub async fn add_port_forward(&self, id_or_name: &str, p: PortForward) -> ApiResult<Vm> {
        let v = self.store().vm(id_or_name).await?;
        let mut ports = ports_of(&v);
        if ports
            .iter()
            .any(|q| q.host_port == p.host_port && q.protocol == p.protocol)
        {
            return Err(ApiError::Conflict(format!(
                "VM {} already forwards host port {}/{}",
                v.name,
                p.host_port,
                p.protocol.as_str()
            )));
        }
        ports.push(p);
        self.set_ports(v, ports).await
    }

    /// Takes a VM's forward of `host_port` away.
    pub async fn remove_port_forward(
        &self,
        id_or_name: &str,
        host_port: u16,
        protocol: Protocol,
    ) -> ApiResult<Vm> {
        let v = self.store().vm(id_or_name).await?;
        let mut ports = ports_of(&v);
        let before = ports.len();
        ports.retain(|q| !(q.host_port == host_port && q.protocol == protocol));
        if ports.len() == before {
            return Err(ApiError::NotFound(format!(
                "VM {} forwards no host port {host_port}/{}",
                v.name,
                protocol.as_str()
            )));
        }
        self.set_ports(v, ports).await
    }

    async fn set_ports(&self, v: VmRecord, ports: Vec<PortForward>) -> ApiResult<Vm> {
        let host = v.host_id.clone().unwrap_or_default();
        let others: Vec<VmRecord> = self
            .store()
            .vms_on_host(&host)
            .await?
            .into_iter()
            .filter(|o| o.id != v.id)
            .collect();
        check_ports(&v.network, &ports, &others)?;
        if v.network_id.is_some() && ports.iter().any(|p| p.protocol != Protocol::Tcp) {
            return Err(ApiError::bad_request(
                "on a managed network, port forwards are TCP only",
            ));
        }
        let state: VmState = v.state.parse().unwrap_or(VmState::Failed);
        if matches!(
            state,
            VmState::Starting | VmState::Running | VmState::Paused
        ) {
            let agent = self.agent_for(&v).await?;
            let status = agent
                .rpc()
                .set_ports(agent.request(pb::SetPortsRequest {
                    id: v.id.clone(),
                    ports: pb_ports(&ports),
                }))
                .await?
                .into_inner();
            self.observe(&v.id, &observed(&status)).await?;
        }
        self.store()
            .update_vm_ports(
                &v.id,
                &serde_json::to_string(&ports).unwrap_or_else(|_| "[]".into()),
            )
            .await?;
        self.vm(&v.id).await
    }

    /// Deletes a VM; its snapshots stay unless `with_snapshots`.
    pub async fn delete_vm(&self, id_or_name: &str, with_snapshots: bool) -> ApiResult<()> {
        let v = self.store().vm(id_or_name).await?;
        // First stop wanting it to run, so a heartbeat cannot start it again meanwhile.
        self.store()
            .update_vm_spec(&v.id, &v.name, v.vcpus, v.memory_mib, "stopped")
            .await?;
        if v.host_id.is_some() {
            let agent = self.agent_for(&v).await?;
            agent
                .rpc()
                .delete_vm(agent.request(pb::VmRef { id: v.id.clone() }))
                .await?;
        }
        self.store().delete_vm(&v.id).await?;
        // Its volumes stay, detached, with their data.
        self.store().detach_volumes(None, Some(&v.id)).await?;
        if with_snapshots {
            for s in self.store().snapshots_of_vm(&v.id).await? {
                self.delete_snapshot(&s.id).await?;
            }
        }
        Ok(())
    }

    pub async fn start_vm(&self, id_or_name: &str) -> ApiResult<Vm> {
        let v = self.store().vm(id_or_name).await?;
        let state: VmState = v.state.parse().unwrap_or(VmState::Failed);
        if matches!(state, VmState::Starting | VmState::Running) {
            return Err(ApiError::Conflict(format!(
                "VM {} is already {state}",
                v.name
            )));
        }
        if !state.can_become(VmState::Starting) {
            return Err(ApiError::Conflict(format!(
                "VM {} is {state}: it cannot be started now",
                v.name
            )));
        }
        if v.desired_state != "running" {
            // Starting takes the VM's resources again: check they are still there.
            let host = self.host(v.host_id.as_deref().unwrap_or_default()).await?;
            self.fits(&host, v.vcpus, v.memory_mib)
                .map_err(|why| ApiError::Conflict(format!("cannot start VM {}: {why}", v.name)))?;
        }
        self.store()
            .update_vm_spec(&v.id, &v.name, v.vcpus, v.memory_mib, "running")
            .await?;
        self.start_on_agent(&v).await?;
        self.vm(&v.id).await
    }

    pub async fn stop_vm(&self, id_or_name: &str, force: bool) -> ApiResult<Vm> {
        let v = self.store().vm(id_or_name).await?;
        let state: VmState = v.state.parse().unwrap_or(VmState::Failed);
        if matches!(state, VmState::Stopped | VmState::Creating) {
            return Err(ApiError::Conflict(format!(
                "VM {} is already {state}",
                v.name
            )));
        }
        self.store()
            .update_vm_spec(&v.id, &v.name, v.vcpus, v.memory_mib, "stopped")
            .await?;
        let agent = self.agent_for(&v).await?;
        let res = agent
            .rpc()
            .stop_vm(agent.request(pb::StopVmRequest {
                id: v.id.clone(),
                force,
            }))
            .await;
        match res {
            Ok(s) => {
                self.observe(&v.id, &observed(&s.into_inner())).await?;
            }
            // The agent has no such VM (it restarted): it is stopped either way.
            Err(s) if s.code() == tonic::Code::NotFound => {
                self.mark(&v.id, VmState::Stopped, None).await?;
            }
            Err(s) => return Err(s.into()),
        }
        self.vm(&v.id).await
    }

    pub async fn reboot_vm(&self, id_or_name: &str) -> ApiResult<Vm> {
        let v = self.store().vm(id_or_name).await?;
        let state: VmState = v.state.parse().unwrap_or(VmState::Failed);
        if state != VmState::Running {
            return Err(ApiError::Conflict(format!(
                "VM {} is {state}: only a running VM can be rebooted",
                v.name
            )));
        }
        let agent = self.agent_for(&v).await?;
        let s = agent
            .rpc()
            .reboot_vm(agent.request(pb::VmRef { id: v.id.clone() }))
            .await?
            .into_inner();
        self.observe(&v.id, &observed(&s)).await?;
        self.vm(&v.id).await
    }

    /// Pauses a running VM (or with `pause` false, resumes a paused one): its vCPUs stop,
    /// its memory stays. A paused VM answers nothing until it is resumed.
    pub async fn pause_vm(&self, id_or_name: &str, pause: bool) -> ApiResult<Vm> {
        let v = self.store().vm(id_or_name).await?;
        let state: VmState = v.state.parse().unwrap_or(VmState::Failed);
        let (from, to, op) = if pause {
            (VmState::Running, VmState::Paused, "paused")
        } else {
            (VmState::Paused, VmState::Running, "resumed")
        };
        if state == to {
            return self.vm(&v.id).await;
        }
        if state != from {
            return Err(ApiError::Conflict(format!(
                "VM {} is {state}: only a {from} VM can be {op}",
                v.name
            )));
        }
        let agent = self.agent_for(&v).await?;
        let req = agent.request(pb::VmRef { id: v.id.clone() });
        let s = if pause {
            agent.rpc().pause_vm(req).await
        } else {
            agent.rpc().resume_vm(req).await
        }?
        .into_inner();
        self.observe(&v.id, &observed(&s)).await?;
        self.vm(&v.id).await
    }

    /// Waits until the VM is in `state`: 408 at the timeout, 409 when it failed (or was
    /// stopped while waiting for it to run).
    pub async fn wait_vm(&self, id_or_name: &str, state: VmState, timeout_s: u64) -> ApiResult<Vm> {
        if !(1..=MAX_WAIT_S).contains(&timeout_s) {
            return Err(ApiError::bad_request(format!(
                "timeout_s must be 1–{MAX_WAIT_S}"
            )));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_s);
        loop {
            // Registered before reading, so a change recorded in between still wakes us.
            let changed = self.inner.vm_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let v = self.vm(id_or_name).await?;
            if v.state == state {
                return Ok(v);
            }
            if v.state == VmState::Failed {
                return Err(ApiError::Conflict(format!(
                    "VM {} failed: {}{}",
                    v.name,
                    v.reason.as_deref().unwrap_or("no reason recorded"),
                    v.console_tail
                        .as_deref()
                        .map(|t| format!("\nlast console lines:\n{t}"))
                        .unwrap_or_default()
                )));
            }
            if state == VmState::Running && v.desired_state == DesiredState::Stopped {
                return Err(ApiError::Conflict(format!(
                    "VM {} is {} and not asked to run: start it first",
                    v.name, v.state
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::Timeout(format!(
                    "VM {} is still {} after {timeout_s} s",
                    v.name, v.state
                )));
            }
            // Woken at once by a change this manager records; the poll catches changes
            // recorded by another manager on the same database.
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    pub async fn exec_vm(&self, id_or_name: &str, req: ExecVm) -> ApiResult<ExecResult> {
        if req.command.is_empty() || req.command.len() > MAX_EXEC_ARGS {
            return Err(ApiError::bad_request(format!(
                "command must be a list of 1–{MAX_EXEC_ARGS} strings, e.g. [\"uname\", \"-r\"]"
            )));
        }
        let stdin = req.stdin.unwrap_or_default().into_bytes();
        if stdin.len() > MAX_EXEC_STDIN {
            return Err(ApiError::PayloadTooLarge(
                "stdin is limited to 1 MiB".into(),
            ));
        }
        let timeout_s = req.timeout_s.unwrap_or(60);
        if !(1..=3600).contains(&timeout_s) {
            return Err(ApiError::bad_request("timeout_s must be 1–3600"));
        }
        let v = self.running(id_or_name, "exec").await?;
        let agent = self.agent_for(&v).await?;
        let mut rpc = agent.request(pb::ExecRequest {
            id: v.id.clone(),
            command: req.command,
            env: req.env.into_iter().collect(),
            stdin,
            timeout_ms: timeout_s * 1000,
            cwd: req.cwd.unwrap_or_default(),
        });
        rpc.set_timeout(Duration::from_secs(timeout_s + 15));
        let out = agent.rpc().exec(rpc).await?.into_inner();
        Ok(ExecResult {
            exit_code: out.exit_code,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            timed_out: out.timed_out,
            truncated: out.truncated,
        })
    }

    /// Sends one line to the VM's persistent worker (started from `argv` with `env` when it
    /// is not running) and returns its answer. Without a line, only starts the worker.
    pub(crate) async fn call_worker(
        &self,
        id_or_name: &str,
        argv: Vec<String>,
        env: BTreeMap<String, String>,
        line: Option<String>,
        timeout_s: u64,
    ) -> ApiResult<pb::CallResponse> {
        let v = self.running(id_or_name, "call").await?;
        let agent = self.agent_for(&v).await?;
        let mut rpc = agent.request(pb::CallRequest {
            id: v.id.clone(),
            argv,
            env: env.into_iter().collect(),
            cwd: "/code".into(),
            start_only: line.is_none(),
            line: line.unwrap_or_default(),
            timeout_ms: timeout_s * 1000,
        });
        rpc.set_timeout(Duration::from_secs(timeout_s + 15));
        Ok(agent.rpc().call(rpc).await?.into_inner())
    }

    /// The VM, if it is running; 409 saying what to do otherwise.
    async fn running(&self, id_or_name: &str, op: &str) -> ApiResult<VmRecord> {
        let v = self.store().vm(id_or_name).await?;
        if v.state != "running" {
            return Err(ApiError::Conflict(format!(
                "VM {} is {}: cannot {op} (start it and wait for `running`)",
                v.name, v.state
            )));
        }
        Ok(v)
    }

    pub async fn vm_metrics(&self, id_or_name: &str) -> ApiResult<VmMetrics> {
        let v = self.running(id_or_name, "read metrics").await?;
        let agent = self.agent_for(&v).await?;
        let m = agent
            .rpc()
            .metrics(agent.request(pb::VmRef { id: v.id.clone() }))
            .await?
            .into_inner();
        let mib = |kib: u64| kib as f64 / 1024.0;
        Ok(VmMetrics {
            cpu_percent: m.cpu_percent,
            memory_total_mib: mib(m.memory_total_kib),
            memory_used_mib: mib(m.memory_used_kib),
            disk_total_mib: mib(m.disk_total_kib),
            disk_used_mib: mib(m.disk_used_kib),
            uptime_s: m.uptime_s,
            load1: m.load1,
            load5: m.load5,
            load15: m.load15,
            processes: m.processes,
        })
    }

    /// The serial log as a stream of chunks: its tail, then new output when `follow`.
    pub async fn vm_console(
        &self,
        id_or_name: &str,
        tail_bytes: u64,
        follow: bool,
    ) -> ApiResult<tonic::Streaming<pb::ConsoleChunk>> {
        let v = self.store().vm(id_or_name).await?;
        let agent = self.agent_for(&v).await?;
        let mut req = agent.request(pb::ConsoleRequest {
            id: v.id.clone(),
            follow,
            tail_bytes,
        });
        if follow {
            req.set_timeout(Duration::from_secs(24 * 3600));
        }
        match agent.rpc().console(req).await {
            Ok(s) => Ok(s.into_inner()),
            Err(s) if s.code() == tonic::Code::NotFound => Err(ApiError::Conflict(format!(
                "VM {} has not been started on its host yet: no console",
                v.name
            ))),
            Err(s) => Err(s.into()),
        }
    }

    /// The agent (and VM id) a shell session talks to.
    pub async fn vm_shell_target(&self, id_or_name: &str) -> ApiResult<(HostClient, String)> {
        let v = self.running(id_or_name, "open a shell").await?;
        Ok((self.agent_for(&v).await?, v.id))
    }

    /// Records an observation and wakes everyone waiting on a VM's state here.
    pub(crate) async fn observe(
        &self,
        id: &str,
        o: &Observed,
    ) -> Result<bool, hearth_store::StoreError> {
        let applied = self.store().observe_vm(id, o).await?;
        if applied {
            self.inner.vm_changed.notify_waiters();
        }
        Ok(applied)
    }

    async fn mark(&self, id: &str, state: VmState, reason: Option<String>) -> ApiResult<()> {
        self.observe(
            id,
            &Observed {
                state: state.as_str().into(),
                reason,
                observed_at_ms: now_ms(),
                ..Default::default()
            },
        )
        .await?;
        Ok(())
    }

    /// One status an agent reported.
    pub async fn apply_vm_status(
        &self,
        host_id: &str,
        s: &pb::VmStatus,
    ) -> Result<(), RegistryError> {
        match self.store().vm(&s.id).await {
            Ok(v) if v.id == s.id && v.host_id.as_deref() == Some(host_id) => {
                self.observe(&v.id, &observed(s)).await?;
            }
            // Not ours (deleted meanwhile, or another host's): ignore it.
            _ => {}
        }
        Ok(())
    }

    /// A heartbeat's full list: apply each status, and fail the VMs that should be running
    /// on this host but that its agent does not know.
    pub async fn reconcile_host_vms(
        &self,
        host_id: &str,
        reported: &[pb::VmStatus],
    ) -> Result<(), RegistryError> {
        let known: HashMap<&str, &pb::VmStatus> =
            reported.iter().map(|s| (s.id.as_str(), s)).collect();
        for v in self.store().vms_on_host(host_id).await? {
            match known.get(v.id.as_str()) {
                Some(s) => {
                    self.observe(&v.id, &observed(s)).await?;
                }
                None => {
                    // A VM that should run but that its agent does not know (the agent
                    // restarted, losing its VMs): boot it again. Waiting out the grace
                    // period keeps a heartbeat that races a create from doing this.
                    if v.desired_state == "running" && now_ms() - v.updated_at_ms > MISSING_GRACE_MS
                    {
                        self.restart_lost(v);
                    }
                }
            }
        }
        Ok(())
    }
}

impl App {
    /// Starts a VM its agent lost, once at a time per VM, in the background (a heartbeat
    /// must not wait for it).
    fn restart_lost(&self, v: VmRecord) {
        if v.function_id.is_some() {
            // A function's VM lost its code with its agent: its pool replaces it instead.
            let app = self.clone();
            tokio::spawn(async move {
                let _ = app
                    .mark(
                        &v.id,
                        VmState::Failed,
                        Some("its host's agent lost it; its function's pool replaces it".into()),
                    )
                    .await;
            });
            return;
        }
        let mut restarting = self
            .inner
            .restarting
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !restarting.insert(v.id.clone()) {
            return;
        }
        drop(restarting);
        let app = self.clone();
        tokio::spawn(async move {
            tracing::warn!(vm = %v.id, name = %v.name, "its agent no longer runs it; starting it again");
            if let Err(e) = app.start_on_agent(&v).await {
                let _ = app
                    .mark(
                        &v.id,
                        VmState::Failed,
                        Some(format!(
                            "its host's agent lost it and starting it again failed: {e}"
                        )),
                    )
                    .await;
            }
            app.inner
                .restarting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&v.id);
        });
    }

    /// The images the hosts report, merged by name.
    pub async fn list_images(&self) -> ApiResult<Page<hearth_types::vm::Image>> {
        let mut by_name: std::collections::BTreeMap<String, hearth_types::vm::Image> =
            Default::default();
        for h in self.hosts_for_placement().await? {
            for i in &h.images {
                by_name
                    .entry(i.name.clone())
                    .or_insert_with(|| hearth_types::vm::Image {
                        name: i.name.clone(),
                        kind: i.kind.clone(),
                        kernel_version: i.kernel_version.clone(),
                        size_bytes: i.size_bytes,
                        hosts: vec![],
                    })
                    .hosts
                    .push(h.name.clone());
            }
        }
        Ok(Page {
            items: by_name.into_values().collect(),
            next_cursor: None,
        })
    }
}
