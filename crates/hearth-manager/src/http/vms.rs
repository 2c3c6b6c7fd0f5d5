//! `/v1/vms` and `/v1/images`. Handlers extract, call `app::vms`, and shape the answer; the
//! WebSocket ones (console follow, shell, metrics stream) only pump bytes between the socket
//! and the agent's stream.
//!
//! Shell WebSocket protocol: binary frames carry terminal bytes both ways; a text frame
//! `{"resize":{"rows":R,"cols":C}}` resizes the terminal (any other text is typed as input);
//! when the shell ends the server sends `{"exit_code":N}` and closes.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hearth_agent_api::pb;
use hearth_types::api::{ListQuery, Page};
use hearth_types::vm::{
    ConsoleQuery, CreateVm, ExecResult, ExecVm, Image, PortForward, PortQuery, StopQuery, UpdateVm,
    Vm, VmMetrics, VmState, WaitQuery,
};
use hearth_types::ErrorBody;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::IntoParams;

use super::extract::{Json, Path, Query};
use crate::app::App;
use crate::error::{ApiError, ApiResult};

/// A WebSocket upgrade when the request asks for one; `None` for a plain request.
pub struct MaybeWs(Option<WebSocketUpgrade>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeWs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let wants = parts
            .headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        if !wants {
            return Ok(MaybeWs(None));
        }
        WebSocketUpgrade::from_request_parts(parts, state)
            .await
            // A browser that offered subprotocols refuses an answer that picks none.
            .map(|u| MaybeWs(Some(u.protocols([super::extract::WS_PROTOCOL]))))
            .map_err(|r| ApiError::BadRequest(format!("bad WebSocket upgrade: {}", r.body_text())))
    }
}

#[utoipa::path(get, path = "/v1/vms", tag = "vms", params(ListQuery),
    responses((status = 200, body = Page<Vm>)))]
pub async fn list_vms(
    State(app): State<App>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<Vm>>> {
    Ok(Json(app.list_vms(q.cursor.as_deref(), q.limit).await?))
}

/// Create a VM, placed on a host with room, and start it unless `"start": false`.
#[utoipa::path(post, path = "/v1/vms", tag = "vms", request_body = CreateVm,
    responses((status = 201, body = Vm), (status = 400, body = ErrorBody),
        (status = 404, description = "unknown image or host", body = ErrorBody),
        (status = 409, description = "name taken, or no host has room", body = ErrorBody)))]
pub async fn create_vm(
    State(app): State<App>,
    Json(req): Json<CreateVm>,
) -> ApiResult<(StatusCode, Json<Vm>)> {
    Ok((StatusCode::CREATED, Json(app.create_vm(req).await?)))
}

#[utoipa::path(get, path = "/v1/vms/{id}", tag = "vms", params(("id" = String, Path, description = "VM id or name")),
    responses((status = 200, body = Vm), (status = 404, body = ErrorBody)))]
pub async fn get_vm(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Vm>> {
    Ok(Json(app.vm(&id).await?))
}

/// Rename or resize a VM (a resize needs it stopped and applies at the next start).
#[utoipa::path(patch, path = "/v1/vms/{id}", tag = "vms", params(("id" = String, Path, description = "VM id or name")),
    request_body = UpdateVm,
    responses((status = 200, body = Vm), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_vm(
    State(app): State<App>,
    Path(id): Path<String>,
    Json(req): Json<UpdateVm>,
) -> ApiResult<Json<Vm>> {
    Ok(Json(app.update_vm(&id, req).await?))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteVmQuery {
    /// Delete the VM's snapshots too (default: keep them).
    pub snapshots: Option<bool>,
}

/// Delete a VM: its VMM is killed and its run dir and disk removed. Its snapshots stay
/// unless `?snapshots=true`.
#[utoipa::path(delete, path = "/v1/vms/{id}", tag = "vms", params(("id" = String, Path, description = "VM id or name"), DeleteVmQuery),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 503, description = "its host is unreachable", body = ErrorBody)))]
pub async fn delete_vm(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<DeleteVmQuery>,
) -> ApiResult<StatusCode> {
    app.delete_vm(&id, q.snapshots.unwrap_or(false)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start a stopped or failed VM. Answers at once with `starting`; `wait` for `running`.
#[utoipa::path(post, path = "/v1/vms/{id}/start", tag = "vms", params(("id" = String, Path, description = "VM id or name")),
    responses((status = 202, body = Vm), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn start_vm(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Vm>)> {
    Ok((StatusCode::ACCEPTED, Json(app.start_vm(&id).await?)))
}

/// Stop a VM: the guest shuts down, then ACPI power-off, then a kill, each bounded;
/// `?force=true` kills at once.
#[utoipa::path(post, path = "/v1/vms/{id}/stop", tag = "vms", params(("id" = String, Path, description = "VM id or name"), StopQuery),
    responses((status = 202, body = Vm), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop_vm(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> ApiResult<(StatusCode, Json<Vm>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(app.stop_vm(&id, q.force.unwrap_or(false)).await?),
    ))
}

/// Pause a running VM: its vCPUs stop and its memory stays; exec and the other guest calls
/// answer 409 until it is resumed.
#[utoipa::path(post, path = "/v1/vms/{id}/pause", tag = "vms", params(("id" = String, Path, description = "VM id or name")),
    responses((status = 200, body = Vm), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn pause_vm(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Vm>> {
    Ok(Json(app.pause_vm(&id, true).await?))
}

/// Forward a host port (on 127.0.0.1) to a guest port: at once when the VM runs, and at its
/// later starts.
#[utoipa::path(post, path = "/v1/vms/{id}/ports", tag = "vms", params(("id" = String, Path, description = "VM id or name")),
    request_body = PortForward,
    responses((status = 200, body = Vm), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the host port is taken", body = ErrorBody)))]
pub async fn add_port_forward(
    State(app): State<App>,
    Path(id): Path<String>,
    Json(req): Json<PortForward>,
) -> ApiResult<Json<Vm>> {
    Ok(Json(app.add_port_forward(&id, req).await?))
}

/// Stop forwarding a host port to the VM.
#[utoipa::path(delete, path = "/v1/vms/{id}/ports/{host_port}", tag = "vms",
    params(("id" = String, Path, description = "VM id or name"), ("host_port" = u16, Path), PortQuery),
    responses((status = 200, body = Vm), (status = 404, body = ErrorBody)))]
pub async fn remove_port_forward(
    State(app): State<App>,
    Path((id, host_port)): Path<(String, u16)>,
    Query(q): Query<PortQuery>,
) -> ApiResult<Json<Vm>> {
    Ok(Json(
        app.remove_port_forward(&id, host_port, q.protocol.unwrap_or_default())
            .await?,
    ))
}

/// Resume a paused VM.
#[utoipa::path(post, path = "/v1/vms/{id}/resume", tag = "vms", params(("id" = String, Path, description = "VM id or name")),
    responses((status = 200, body = Vm), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn resume_vm(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Vm>> {
    Ok(Json(app.pause_vm(&id, false).await?))
}

/// Stop a running VM gracefully and start it again.
#[utoipa::path(post, path = "/v1/vms/{id}/reboot", tag = "vms", params(("id" = String, Path, description = "VM id or name")),
    responses((status = 202, body = Vm), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn reboot_vm(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Vm>)> {
    Ok((StatusCode::ACCEPTED, Json(app.reboot_vm(&id).await?)))
}

/// Wait for a VM to reach a state.
#[utoipa::path(get, path = "/v1/vms/{id}/wait", tag = "vms", params(("id" = String, Path, description = "VM id or name"), WaitQuery),
    responses((status = 200, body = Vm), (status = 404, body = ErrorBody),
        (status = 408, description = "not reached within timeout_s", body = ErrorBody),
        (status = 409, description = "the VM failed (reason and console tail in the message)", body = ErrorBody)))]
pub async fn wait_vm(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Json<Vm>> {
    let state = q.state.unwrap_or(VmState::Running);
    Ok(Json(
        app.wait_vm(&id, state, q.timeout_s.unwrap_or(60)).await?,
    ))
}

/// Run a command in the guest and collect its output.
#[utoipa::path(post, path = "/v1/vms/{id}/exec", tag = "vms", params(("id" = String, Path, description = "VM id or name")),
    request_body = ExecVm,
    responses((status = 200, body = ExecResult), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the VM is not running", body = ErrorBody)))]
pub async fn exec_vm(
    State(app): State<App>,
    Path(id): Path<String>,
    Json(req): Json<ExecVm>,
) -> ApiResult<Json<ExecResult>> {
    Ok(Json(app.exec_vm(&id, req).await?))
}

/// The serial console log as text. With a WebSocket upgrade: the log's tail, then new
/// output as binary frames until the socket closes.
#[utoipa::path(get, path = "/v1/vms/{id}/console", tag = "vms", params(("id" = String, Path, description = "VM id or name"), ConsoleQuery),
    responses((status = 200, content_type = "text/plain", body = String), (status = 101, description = "WebSocket follow"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn console_vm(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<ConsoleQuery>,
    MaybeWs(ws): MaybeWs,
) -> ApiResult<Response> {
    let tail = q.tail_bytes.unwrap_or(64 << 10).min(1 << 20);
    let mut stream = app.vm_console(&id, tail, ws.is_some()).await?;
    let Some(ws) = ws else {
        let mut text = Vec::new();
        while let Some(chunk) = stream.message().await? {
            text.extend_from_slice(&chunk.data);
        }
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            String::from_utf8_lossy(&text).into_owned(),
        )
            .into_response());
    };
    Ok(ws.on_upgrade(move |socket| async move {
        let (mut tx, mut rx) = socket.split();
        loop {
            tokio::select! {
                chunk = stream.message() => match chunk {
                    Ok(Some(c)) => {
                        if tx.send(Message::Binary(c.data.into())).await.is_err() { break; }
                    }
                    _ => break,
                },
                m = rx.next() => if matches!(m, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) { break },
            }
        }
        let _ = tx.send(Message::Close(None)).await;
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShellQuery {
    /// The terminal's initial rows (default 24).
    pub rows: Option<u32>,
    /// The terminal's initial columns (default 80).
    pub cols: Option<u32>,
}

#[derive(Deserialize)]
struct Control {
    resize: Option<Size>,
}

#[derive(Deserialize)]
struct Size {
    rows: u32,
    cols: u32,
}

/// An interactive shell in the guest, over a WebSocket (see the module docs for framing).
#[utoipa::path(get, path = "/v1/vms/{id}/shell", tag = "vms", params(("id" = String, Path, description = "VM id or name"), ShellQuery),
    responses((status = 101, description = "WebSocket PTY"), (status = 400, description = "not a WebSocket request", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "the VM is not running", body = ErrorBody)))]
pub async fn shell_vm(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<ShellQuery>,
    MaybeWs(ws): MaybeWs,
) -> ApiResult<Response> {
    let ws = ws.ok_or_else(|| {
        ApiError::bad_request(
            "the shell is a WebSocket: connect with a WebSocket client (`hearth vm shell`)",
        )
    })?;
    let (agent, vm_id) = app.vm_shell_target(&id).await?;
    let (in_tx, in_rx) = mpsc::channel::<pb::ShellInput>(64);
    let open = pb::ShellInput {
        input: Some(pb::shell_input::Input::Open(pb::ShellOpen {
            id: vm_id,
            rows: q.rows.unwrap_or(24),
            cols: q.cols.unwrap_or(80),
            command: vec![],
        })),
    };
    let _ = in_tx.send(open).await;
    let mut req = agent.request(ReceiverStream::new(in_rx));
    req.set_timeout(Duration::from_secs(24 * 3600));
    let mut out = agent.rpc().shell(req).await?.into_inner();
    Ok(ws.on_upgrade(move |socket| async move {
        let (mut tx, mut rx) = socket.split();
        let stdin = |data: Vec<u8>| pb::ShellInput {
            input: Some(pb::shell_input::Input::Stdin(data)),
        };
        loop {
            tokio::select! {
                m = rx.next() => {
                    let input = match m {
                        Some(Ok(Message::Binary(b))) => stdin(b.to_vec()),
                        Some(Ok(Message::Text(t))) => match serde_json::from_str::<Control>(&t) {
                            Ok(Control { resize: Some(s) }) => pb::ShellInput {
                                input: Some(pb::shell_input::Input::Resize(pb::PtyResize { rows: s.rows, cols: s.cols })),
                            },
                            _ => stdin(t.as_bytes().to_vec()),
                        },
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        _ => break,
                    };
                    if in_tx.send(input).await.is_err() { break; }
                }
                o = out.message() => match o {
                    Ok(Some(pb::ShellOutput { output: Some(pb::shell_output::Output::Stdout(b)) })) => {
                        if tx.send(Message::Binary(b.into())).await.is_err() { break; }
                    }
                    Ok(Some(pb::ShellOutput { output: Some(pb::shell_output::Output::ExitCode(c)) })) => {
                        let _ = tx.send(Message::Text(serde_json::json!({ "exit_code": c }).to_string().into())).await;
                        break;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(s) => {
                        let _ = tx.send(Message::Text(serde_json::json!({ "error": s.message() }).to_string().into())).await;
                        break;
                    }
                },
            }
        }
        let _ = tx.send(Message::Close(None)).await;
    }))
}

/// CPU %, memory, disk, uptime and load. With a WebSocket upgrade: one JSON text frame
/// every second.
#[utoipa::path(get, path = "/v1/vms/{id}/metrics", tag = "vms", params(("id" = String, Path, description = "VM id or name")),
    responses((status = 200, body = VmMetrics), (status = 101, description = "WebSocket stream"),
        (status = 404, body = ErrorBody), (status = 409, description = "the VM is not running", body = ErrorBody)))]
pub async fn metrics_vm(
    State(app): State<App>,
    Path(id): Path<String>,
    MaybeWs(ws): MaybeWs,
) -> ApiResult<Response> {
    let first = app.vm_metrics(&id).await?;
    let Some(ws) = ws else {
        return Ok(Json(first).into_response());
    };
    Ok(ws.on_upgrade(move |socket| async move {
        let (mut tx, mut rx) = socket.split();
        let mut next: ApiResult<VmMetrics> = Ok(first);
        loop {
            let text = match &next {
                Ok(m) => serde_json::to_string(m).unwrap_or_default(),
                Err(e) => serde_json::json!({ "error": e.to_string() }).to_string(),
            };
            if tx.send(Message::Text(text.into())).await.is_err() || next.is_err() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                m = rx.next() => if !matches!(m, Some(Ok(Message::Ping(_) | Message::Pong(_)))) { break },
            }
            next = app.vm_metrics(&id).await;
        }
        let _ = tx.send(Message::Close(None)).await;
    }))
}

/// The images hosts can boot.
#[utoipa::path(get, path = "/v1/images", tag = "images",
    responses((status = 200, body = Page<Image>)))]
pub async fn list_images(State(app): State<App>) -> ApiResult<Json<Page<Image>>> {
    Ok(Json(app.list_images().await?))
}
