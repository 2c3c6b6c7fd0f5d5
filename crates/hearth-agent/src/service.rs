//! The agent's side of the RPC contract. Every call must carry the agent token this agent
//! gave the manager at registration. Handlers translate: VM lifecycle goes to the VM's owner
//! through [`Vms`]; exec, console, shell and metrics talk to a running guest's channel.
//! [`status`] is the one place agent errors become gRPC codes.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearth_agent_api::{bearer, pb, Agent};
use hearth_guest_proto::client::ClientError;
use hearth_guest_proto::msg::{
    GuestMetrics, PtySize, Request as GuestRequest, Response as GuestResponse,
};
use hearth_guest_proto::Kind;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::host_info::HostProbe;
use crate::identity::Identity;
use crate::image::Images;
use crate::runtimes::Runtimes;
use crate::vm::{VmError, Vms};
use std::path::PathBuf;

/// Bounds on what one call may carry.
const MAX_ARGS: usize = 1024;
const MAX_EXEC_OUTPUT: usize = 8 << 20;
const MAX_EXEC_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_CONSOLE_TAIL: u64 = 1 << 20;
const DEFAULT_CONSOLE_TAIL: u64 = 64 << 10;

pub struct AgentService {
    identity: Arc<Identity>,
    probe: HostProbe,
    vms: Vms,
    runtimes: Runtimes,
    images: Images,
    /// Where imported images live.
    imported_dir: PathBuf,
    /// The previous CPU sample of each VM, for a percentage between two samples.
    cpu: Mutex<HashMap<String, (Instant, u64, u64)>>,
}

impl AgentService {
    pub fn new(
        identity: Arc<Identity>,
        probe: HostProbe,
        vms: Vms,
        runtimes: Runtimes,
        images: Images,
        imported_dir: PathBuf,
    ) -> AgentService {
        AgentService {
            identity,
            probe,
            vms,
            runtimes,
            images,
            imported_dir,
            cpu: Mutex::default(),
        }
    }

    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match bearer(req) {
            Some(t) if constant_time_eq(t.as_bytes(), self.identity.agent_token.as_bytes()) => {
                Ok(())
            }
            Some(_) => Err(Status::unauthenticated("wrong agent token")),
            None => Err(Status::unauthenticated("missing agent token")),
        }
    }

    async fn sample(&self, id: &str) -> Result<GuestMetrics, Status> {
        let guest = self.vms.guest(id, "read metrics").map_err(status)?;
        match call_within(&guest, &GuestRequest::Metrics, 10, "send metrics").await? {
            GuestResponse::Metrics(m) => Ok(m),
            other => Err(Status::internal(format!("guest answered {other:?}"))),
        }
    }
}

/// One guest request, its answer within `secs` seconds, transport failures mapped to codes.
async fn call_within(
    guest: &hearth_guest_proto::client::GuestClient,
    req: &GuestRequest,
    secs: u64,
    what: &str,
) -> Result<GuestResponse, Status> {
    match tokio::time::timeout(Duration::from_secs(secs), guest.call(req)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(guest_error(e)),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the guest did not {what} within {secs} s"
        ))),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The one mapping of agent errors to gRPC codes (the manager maps codes to HTTP).
pub fn status(e: VmError) -> Status {
    match e {
        VmError::NotFound(_) | VmError::NoSnapshot(_) => Status::not_found(e.to_string()),
        VmError::Incompatible(_) => Status::failed_precondition(e.to_string()),
        VmError::WrongState { .. } => Status::failed_precondition(e.to_string()),
        VmError::Busy(_) => Status::resource_exhausted(e.to_string()),
        VmError::Invalid(m) => Status::invalid_argument(m),
        VmError::Failed(m) => Status::unavailable(m),
    }
}

fn guest_error(e: ClientError) -> Status {
    match e {
        ClientError::Closed => {
            Status::unavailable("the guest connection closed (did the VM stop?)")
        }
        other => Status::internal(format!("guest protocol: {other}")),
    }
}

/// The largest image an agent takes.
const MAX_IMAGE_UPLOAD: u64 = 16 << 30;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    async fn get_host_info(
        &self,
        req: Request<pb::GetHostInfoRequest>,
    ) -> Result<Response<pb::HostInfo>, Status> {
        self.authorize(&req)?;
        Ok(Response::new(self.probe.report().await))
    }

    async fn start_vm(
        &self,
        req: Request<pb::StartVmRequest>,
    ) -> Result<Response<pb::VmStatus>, Status> {
        self.authorize(&req)?;
        let spec = req
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("spec is required"))?;
        self.vms
            .start(spec.try_into().map_err(status)?)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn stop_vm(
        &self,
        req: Request<pb::StopVmRequest>,
    ) -> Result<Response<pb::VmStatus>, Status> {
        self.authorize(&req)?;
        let r = req.into_inner();
        self.vms
            .stop(&r.id, r.force)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn reboot_vm(&self, req: Request<pb::VmRef>) -> Result<Response<pb::VmStatus>, Status> {
        self.authorize(&req)?;
        self.vms
            .reboot(&req.into_inner().id)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn snapshot_vm(
        &self,
        req: Request<pb::SnapshotVmRequest>,
    ) -> Result<Response<pb::SnapshotInfo>, Status> {
        self.authorize(&req)?;
        let r = req.into_inner();
        self.vms
            .snapshot(&r.vm_id, &r.snapshot_id)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn restore_vm(
        &self,
        req: Request<pb::RestoreVmRequest>,
    ) -> Result<Response<pb::VmStatus>, Status> {
        self.authorize(&req)?;
        let r = req.into_inner();
        let spec = r
            .spec
            .ok_or_else(|| Status::invalid_argument("spec is required"))?;
        self.vms
            .restore(spec.try_into().map_err(status)?, &r.snapshot_id)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn delete_snapshot(
        &self,
        req: Request<pb::SnapshotRef>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        self.authorize(&req)?;
        self.vms
            .delete_snapshot(&req.into_inner().id)
            .map(|()| Response::new(pb::DeleteSnapshotResponse {}))
            .map_err(status)
    }

    async fn import_image(
        &self,
        req: Request<Streaming<pb::ImageChunk>>,
    ) -> Result<Response<pb::ImageInfo>, Status> {
        self.authorize(&req)?;
        let mut chunks = req.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no image sent"))?;
        let h = first
            .header
            .clone()
            .ok_or_else(|| Status::invalid_argument("the first message must name the image"))?;
        let format: crate::image::imported::Upload =
            h.format.parse().map_err(Status::invalid_argument)?;
        hearth_types::vm::check_user_image_name(&h.name).map_err(Status::invalid_argument)?;
        if h.size_bytes > MAX_IMAGE_UPLOAD {
            return Err(Status::invalid_argument(format!(
                "images are at most {} GiB",
                MAX_IMAGE_UPLOAD >> 30
            )));
        }
        // The upload goes to a file first (it is read more than once), checked as it comes.
        std::fs::create_dir_all(&self.imported_dir).map_err(|e| Status::internal(e.to_string()))?;
        let upload = self
            .imported_dir
            .join(format!(".upload-{}", hearth_types::short_suffix()));
        let res = async {
            use sha2::Digest;
            use tokio::io::AsyncWriteExt;
            let mut f = tokio::fs::File::create(&upload).await?;
            let mut hash = sha2::Sha256::new();
            let mut n = 0u64;
            let mut chunk = first.data;
            loop {
                n += chunk.len() as u64;
                if n > h.size_bytes {
                    return Err(Status::invalid_argument("more bytes came than announced"));
                }
                hash.update(&chunk);
                f.write_all(&chunk).await?;
                match chunks.message().await? {
                    Some(c) => chunk = c.data,
                    None => break,
                }
            }
            f.flush().await?;
            if n != h.size_bytes {
                return Err(Status::invalid_argument(format!(
                    "the upload ended after {n} of {} bytes",
                    h.size_bytes
                )));
            }
            let sha = hex::encode(hash.finalize());
            if !h.sha256.is_empty() && !sha.eq_ignore_ascii_case(&h.sha256) {
                return Err(Status::invalid_argument(format!(
                    "the upload's SHA-256 is {sha}, not {}",
                    h.sha256
                )));
            }
            let (images, dir, up, name) = (
                self.images.clone(),
                self.imported_dir.clone(),
                upload.clone(),
                h.name.clone(),
            );
            let image = tokio::task::spawn_blocking(move || {
                crate::image::imported::import(&up, format, &name, &sha, &dir, &images)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
            Ok::<_, Status>(image)
        }
        .await;
        let _ = tokio::fs::remove_file(&upload).await;
        let image = res?;
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        Ok(Response::new(pb::ImageInfo {
            name: h.name,
            kind: "rootfs".into(),
            kernel_version: image.kernel_version.clone(),
            size_bytes: image.rootfs.as_deref().map_or(0, size),
        }))
    }

    async fn build_image(
        &self,
        req: Request<pb::BuildImageRequest>,
    ) -> Result<Response<pb::RuntimeStatus>, Status> {
        self.authorize(&req)?;
        let r = req.into_inner();
        self.runtimes
            .image_build(&r.name, r.packages, r.start, self.imported_dir.clone())
            .map(Response::new)
            .map_err(Status::invalid_argument)
    }

    async fn delete_network(
        &self,
        req: Request<pb::NetworkRef>,
    ) -> Result<Response<pb::DeleteNetworkResponse>, Status> {
        self.authorize(&req)?;
        self.vms
            .delete_network(&req.into_inner().id)
            .await
            .map(|()| Response::new(pb::DeleteNetworkResponse {}))
            .map_err(status)
    }

    async fn delete_volume(
        &self,
        req: Request<pb::VolumeRef>,
    ) -> Result<Response<pb::DeleteVolumeResponse>, Status> {
        self.authorize(&req)?;
        self.vms
            .delete_volume(&req.into_inner().id)
            .map(|()| Response::new(pb::DeleteVolumeResponse {}))
            .map_err(status)
    }

    async fn set_ports(
        &self,
        req: Request<pb::SetPortsRequest>,
    ) -> Result<Response<pb::VmStatus>, Status> {
        self.authorize(&req)?;
        let r = req.into_inner();
        self.vms
            .set_ports(&r.id, crate::vm::port_specs(r.ports))
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn pause_vm(&self, req: Request<pb::VmRef>) -> Result<Response<pb::VmStatus>, Status> {
        self.authorize(&req)?;
        self.vms
            .pause(&req.into_inner().id, true)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn resume_vm(&self, req: Request<pb::VmRef>) -> Result<Response<pb::VmStatus>, Status> {
        self.authorize(&req)?;
        self.vms
            .pause(&req.into_inner().id, false)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn delete_vm(
        &self,
        req: Request<pb::VmRef>,
    ) -> Result<Response<pb::DeleteVmResponse>, Status> {
        self.authorize(&req)?;
        let id = req.into_inner().id;
        self.vms.delete(&id).await.map_err(status)?;
        self.cpu
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        Ok(Response::new(pb::DeleteVmResponse {}))
    }

    async fn list_vms(
        &self,
        req: Request<pb::ListVmsRequest>,
    ) -> Result<Response<pb::ListVmsResponse>, Status> {
        self.authorize(&req)?;
        Ok(Response::new(pb::ListVmsResponse {
            vms: self.vms.list(),
        }))
    }

    async fn exec(
        &self,
        req: Request<pb::ExecRequest>,
    ) -> Result<Response<pb::ExecResponse>, Status> {
        self.authorize(&req)?;
        let r = req.into_inner();
        if r.command.is_empty() || r.command.len() > MAX_ARGS {
            return Err(Status::invalid_argument(format!(
                "command must have 1–{MAX_ARGS} arguments"
            )));
        }
        let timeout = match r.timeout_ms {
            0 => DEFAULT_EXEC_TIMEOUT,
            ms => Duration::from_millis(ms).min(MAX_EXEC_TIMEOUT),
        };
        let guest = self.vms.guest(&r.id, "exec").map_err(status)?;
        let greq = GuestRequest::Exec {
            argv: r.command,
            env: r.env.into_iter().collect::<BTreeMap<_, _>>(),
            cwd: (!r.cwd.is_empty()).then_some(r.cwd),
            timeout_ms: timeout.as_millis() as u64,
            pty: None,
        };
        // The guest kills the command at the timeout; this bound covers a guest that hangs.
        let out = tokio::time::timeout(
            timeout + Duration::from_secs(10),
            guest.exec(&greq, &r.stdin, MAX_EXEC_OUTPUT),
        )
        .await
        .map_err(|_| Status::deadline_exceeded("the guest did not finish the command"))?
        .map_err(|e| match e {
            ClientError::Protocol(m) => Status::invalid_argument(m),
            other => guest_error(other),
        })?;
        Ok(Response::new(pb::ExecResponse {
            exit_code: out.code,
            stdout: out.stdout,
            stderr: out.stderr,
            timed_out: out.timed_out,
            truncated: out.truncated,
        }))
    }

    type ConsoleStream = BoxStream<pb::ConsoleChunk>;

    async fn console(
        &self,
        req: Request<pb::ConsoleRequest>,
    ) -> Result<Response<Self::ConsoleStream>, Status> {
        self.authorize(&req)?;
        let r = req.into_inner();
        let path = self.vms.serial_log(&r.id).map_err(status)?;
        let tail = match r.tail_bytes {
            0 => DEFAULT_CONSOLE_TAIL,
            n => n.min(MAX_CONSOLE_TAIL),
        };
        let (tx, rx) = mpsc::channel(16);
        let vms = self.vms.clone();
        tokio::spawn(async move {
            let Ok(mut f) = tokio::fs::File::open(&path).await else {
                return; // never booted: an empty log
            };
            let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
            let mut pos = len.saturating_sub(tail);
            let mut buf = vec![0u8; 64 << 10];
            loop {
                if f.seek(std::io::SeekFrom::Start(pos)).await.is_err() {
                    return;
                }
                loop {
                    match f.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            pos += n as u64;
                            let chunk = pb::ConsoleChunk {
                                data: buf[..n].to_vec(),
                            };
                            if tx.send(Ok(chunk)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                if !r.follow || vms.status(&r.id).is_err() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = tx.closed() => return,
                }
                // A restart truncates the log: start again from its beginning.
                let len = tokio::fs::metadata(&path)
                    .await
                    .map(|m| m.len())
                    .unwrap_or(0);
                if len < pos {
                    match tokio::fs::File::open(&path).await {
                        Ok(nf) => {
                            f = nf;
                            pos = 0;
                        }
                        Err(_) => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ShellStream = BoxStream<pb::ShellOutput>;

    async fn shell(
        &self,
        req: Request<Streaming<pb::ShellInput>>,
    ) -> Result<Response<Self::ShellStream>, Status> {
        self.authorize(&req)?;
        let mut input = req.into_inner();
        let open = match input.next().await {
            Some(Ok(pb::ShellInput {
                input: Some(pb::shell_input::Input::Open(o)),
            })) => o,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must open the shell",
                ))
            }
        };
        let guest = self.vms.guest(&open.id, "open a shell").map_err(status)?;
        let argv = if open.command.is_empty() {
            vec!["/bin/sh".to_string(), "-l".to_string()]
        } else {
            open.command
        };
        let size = PtySize {
            rows: open.rows.clamp(1, 1000) as u16,
            cols: open.cols.clamp(1, 1000) as u16,
        };
        let mut env = BTreeMap::new();
        env.insert("TERM".to_string(), "xterm-256color".to_string());
        let mut stream = guest
            .open(&GuestRequest::Exec {
                argv,
                env,
                cwd: None,
                timeout_ms: 0,
                pty: Some(size),
            })
            .await
            .map_err(guest_error)?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut input_open = true;
            loop {
                tokio::select! {
                    msg = input.next(), if input_open => match msg {
                        Some(Ok(pb::ShellInput { input: Some(i) })) => {
                            let sent = match i {
                                pb::shell_input::Input::Stdin(data) => stream.send(Kind::Stdin, data).await,
                                pb::shell_input::Input::Resize(r) => {
                                    let size = PtySize { rows: r.rows.clamp(1, 1000) as u16, cols: r.cols.clamp(1, 1000) as u16 };
                                    stream.send(Kind::Resize, serde_json::to_vec(&size).unwrap_or_default()).await
                                }
                                pb::shell_input::Input::Open(_) => Ok(()),
                            };
                            if sent.is_err() { break; }
                        }
                        Some(Ok(_)) => {}
                        // The caller went away: end the guest's shell too.
                        _ => {
                            input_open = false;
                            let _ = stream.send(Kind::Cancel, vec![]).await;
                        }
                    },
                    frame = stream.recv() => match frame {
                        None => {
                            let _ = tx.send(Err(Status::unavailable("the guest connection closed"))).await;
                            break;
                        }
                        Some(f) if f.kind == Kind::Stdout || f.kind == Kind::Stderr => {
                            let out = pb::ShellOutput { output: Some(pb::shell_output::Output::Stdout(f.payload)) };
                            if tx.send(Ok(out)).await.is_err() {
                                let _ = stream.send(Kind::Cancel, vec![]).await;
                                break;
                            }
                        }
                        Some(f) if f.kind == Kind::Response => {
                            let code = match f.parse::<GuestResponse>() {
                                Ok(GuestResponse::Exited { code, .. }) => code,
                                _ => -1,
                            };
                            let _ = tx.send(Ok(pb::ShellOutput { output: Some(pb::shell_output::Output::ExitCode(code)) })).await;
                            break;
                        }
                        Some(_) => {}
                    },
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn put_file(
        &self,
        req: Request<pb::PutFileRequest>,
    ) -> Result<Response<pb::PutFileResponse>, Status> {
        use base64::Engine;
        self.authorize(&req)?;
        let r = req.into_inner();
        if !r.path.starts_with('/') || r.path.len() > 4096 {
            return Err(Status::invalid_argument(
                "path must be absolute (at most 4096 bytes)",
            ));
        }
        let guest = self.vms.guest(&r.id, "write a file").map_err(status)?;
        let chunks: Vec<&[u8]> = if r.data.is_empty() {
            vec![&[]]
        } else {
            r.data.chunks(512 << 10).collect()
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let w = GuestRequest::WriteFile {
                path: r.path.clone(),
                data: base64::engine::general_purpose::STANDARD.encode(chunk),
                mode: if r.mode == 0 { 0o644 } else { r.mode & 0o7777 },
                append: i > 0,
            };
            match call_within(&guest, &w, 30, "write the file").await? {
                GuestResponse::Ok => {}
                GuestResponse::Error { message } => {
                    return Err(Status::failed_precondition(message))
                }
                other => return Err(Status::internal(format!("guest answered {other:?}"))),
            }
        }
        Ok(Response::new(pb::PutFileResponse {}))
    }

    async fn call(
        &self,
        req: Request<pb::CallRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        self.authorize(&req)?;
        let r = req.into_inner();
        if r.argv.is_empty() || r.argv.len() > MAX_ARGS {
            return Err(Status::invalid_argument(format!(
                "argv must have 1–{MAX_ARGS} arguments"
            )));
        }
        if r.line.contains('\n') || r.line.len() > hearth_guest_proto::MAX_PAYLOAD / 2 {
            return Err(Status::invalid_argument(
                "line must be one line of at most 512 KiB",
            ));
        }
        let timeout = match r.timeout_ms {
            0 => DEFAULT_EXEC_TIMEOUT,
            ms => Duration::from_millis(ms).min(MAX_EXEC_TIMEOUT),
        };
        let guest = self.vms.guest(&r.id, "call its worker").map_err(status)?;
        let greq = GuestRequest::Call {
            argv: r.argv,
            env: r.env.into_iter().collect(),
            cwd: (!r.cwd.is_empty()).then_some(r.cwd),
            line: r.line,
            timeout_ms: timeout.as_millis() as u64,
            start_only: r.start_only,
        };
        // The guest kills the worker at the timeout; this bound covers a guest that hangs.
        match call_within(&guest, &greq, timeout.as_secs() + 10, "answer the call").await? {
            GuestResponse::Called {
                line,
                logs,
                code,
                timed_out,
            } => Ok(Response::new(pb::CallResponse {
                line,
                logs,
                exit_code: code,
                timed_out,
            })),
            GuestResponse::Error { message } => Err(Status::invalid_argument(message)),
            other => Err(Status::internal(format!("guest answered {other:?}"))),
        }
    }

    async fn build_runtime(
        &self,
        req: Request<pb::BuildRuntimeRequest>,
    ) -> Result<Response<pb::RuntimeStatus>, Status> {
        self.authorize(&req)?;
        let r = req.into_inner();
        self.runtimes
            .status(&r.name, r.start)
            .map(Response::new)
            .map_err(Status::invalid_argument)
    }

    async fn metrics(&self, req: Request<pb::VmRef>) -> Result<Response<pb::VmMetrics>, Status> {
        self.authorize(&req)?;
        let id = req.into_inner().id;
        let prev = self
            .cpu
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
            .filter(|(at, _, _)| at.elapsed() < Duration::from_secs(10));
        let (busy0, total0) = match prev {
            Some((_, b, t)) => (b, t),
            None => {
                let m = self.sample(&id).await?;
                tokio::time::sleep(Duration::from_millis(250)).await;
                (m.cpu_busy_ticks, m.cpu_total_ticks)
            }
        };
        let m = self.sample(&id).await?;
        self.cpu
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (Instant::now(), m.cpu_busy_ticks, m.cpu_total_ticks));
        let dt = m.cpu_total_ticks.saturating_sub(total0);
        let cpu_percent = if dt == 0 {
            0.0
        } else {
            100.0 * m.cpu_busy_ticks.saturating_sub(busy0) as f64 / dt as f64
        };
        Ok(Response::new(pb::VmMetrics {
            cpu_percent,
            memory_total_kib: m.memory_total_kib,
            memory_used_kib: m.memory_total_kib.saturating_sub(m.memory_available_kib),
            disk_total_kib: m.disk_total_kib,
            disk_used_kib: m.disk_used_kib,
            uptime_s: m.uptime_s,
            load1: m.load1,
            load5: m.load5,
            load15: m.load15,
            processes: m.processes,
        }))
    }
}
