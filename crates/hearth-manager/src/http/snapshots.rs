//! `/v1/snapshots` and `/v1/vms/{id}/snapshots`. Handlers extract, call `app::snapshots`, and
//! shape the answer.

use axum::extract::State;
use axum::http::StatusCode;
use hearth_types::api::Page;
use hearth_types::snapshot::{CreateSnapshot, RestoreSnapshot, Snapshot, SnapshotListQuery};
use hearth_types::vm::Vm;
use hearth_types::ErrorBody;

use super::extract::{Json, Path, Query};
use crate::app::App;
use crate::error::ApiResult;

/// Snapshot a running or paused VM: it is paused while its memory and disk are saved, then
/// runs on as it was.
#[utoipa::path(post, path = "/v1/vms/{id}/snapshots", tag = "snapshots",
    params(("id" = String, Path, description = "VM id or name")), request_body = CreateSnapshot,
    responses((status = 201, body = Snapshot), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the VM is not running or paused, or the name is taken", body = ErrorBody)))]
pub async fn create_snapshot(
    State(app): State<App>,
    Path(id): Path<String>,
    Json(req): Json<CreateSnapshot>,
) -> ApiResult<(StatusCode, Json<Snapshot>)> {
    Ok((
        StatusCode::CREATED,
        Json(app.create_snapshot(&id, req).await?),
    ))
}

#[utoipa::path(get, path = "/v1/snapshots", tag = "snapshots", params(SnapshotListQuery),
    responses((status = 200, body = Page<Snapshot>), (status = 404, description = "no such VM", body = ErrorBody)))]
pub async fn list_snapshots(
    State(app): State<App>,
    Query(q): Query<SnapshotListQuery>,
) -> ApiResult<Json<Page<Snapshot>>> {
    Ok(Json(
        app.list_snapshots(q.vm.as_deref(), q.cursor.as_deref(), q.limit)
            .await?,
    ))
}

#[utoipa::path(get, path = "/v1/snapshots/{id}", tag = "snapshots",
    params(("id" = String, Path, description = "snapshot id or name")),
    responses((status = 200, body = Snapshot), (status = 404, body = ErrorBody)))]
pub async fn get_snapshot(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<Json<Snapshot>> {
    Ok(Json(app.snapshot(&id).await?))
}

/// Delete a snapshot and its files.
#[utoipa::path(delete, path = "/v1/snapshots/{id}", tag = "snapshots",
    params(("id" = String, Path, description = "snapshot id or name")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 503, description = "its host is unreachable", body = ErrorBody)))]
pub async fn delete_snapshot(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.delete_snapshot(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start a new VM from a snapshot (on the host that holds it), or with `in_place` roll the
/// snapshot's VM back to it. Answers with the VM `starting`; `wait` for `running`.
#[utoipa::path(post, path = "/v1/snapshots/{id}/restore", tag = "snapshots",
    params(("id" = String, Path, description = "snapshot id or name")), request_body = RestoreSnapshot,
    responses((status = 202, body = Vm), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the snapshot does not fit its host any more (the message names each difference), the name is taken, or the host is full", body = ErrorBody)))]
pub async fn restore_snapshot(
    State(app): State<App>,
    Path(id): Path<String>,
    Json(req): Json<RestoreSnapshot>,
) -> ApiResult<(StatusCode, Json<Vm>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(app.restore_snapshot(&id, req).await?),
    ))
}
