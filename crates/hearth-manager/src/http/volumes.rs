//! `/v1/volumes`. Handlers extract, call `app::volumes`, and shape the answer.

use axum::extract::State;
use axum::http::StatusCode;
use hearth_types::api::{ListQuery, Page};
use hearth_types::volume::{AttachVolume, CreateVolume, ResizeVolume, Volume, VolumeChange};
use hearth_types::ErrorBody;

use super::extract::{Json, Path, Query};
use crate::app::App;
use crate::error::ApiResult;

#[utoipa::path(get, path = "/v1/volumes", tag = "volumes", params(ListQuery),
    responses((status = 200, body = Page<Volume>)))]
pub async fn list_volumes(
    State(app): State<App>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<Volume>>> {
    Ok(Json(app.list_volumes(q.cursor.as_deref(), q.limit).await?))
}

/// Create a volume. Its file is made on a host when a VM it is attached to starts there.
#[utoipa::path(post, path = "/v1/volumes", tag = "volumes", request_body = CreateVolume,
    responses((status = 201, body = Volume), (status = 400, body = ErrorBody), (status = 409, description = "the name is taken", body = ErrorBody)))]
pub async fn create_volume(
    State(app): State<App>,
    Json(req): Json<CreateVolume>,
) -> ApiResult<(StatusCode, Json<Volume>)> {
    Ok((StatusCode::CREATED, Json(app.create_volume(req).await?)))
}

#[utoipa::path(get, path = "/v1/volumes/{id}", tag = "volumes",
    params(("id" = String, Path, description = "volume id or name")),
    responses((status = 200, body = Volume), (status = 404, body = ErrorBody)))]
pub async fn get_volume(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Volume>> {
    Ok(Json(app.volume(&id).await?))
}

/// Grow a volume (applies at the next start of the VM it is attached to).
#[utoipa::path(patch, path = "/v1/volumes/{id}", tag = "volumes",
    params(("id" = String, Path, description = "volume id or name")), request_body = ResizeVolume,
    responses((status = 200, body = VolumeChange), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn resize_volume(
    State(app): State<App>,
    Path(id): Path<String>,
    Json(req): Json<ResizeVolume>,
) -> ApiResult<Json<VolumeChange>> {
    Ok(Json(app.resize_volume(&id, req).await?))
}

/// Delete a detached volume and its file.
#[utoipa::path(delete, path = "/v1/volumes/{id}", tag = "volumes",
    params(("id" = String, Path, description = "volume id or name")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, description = "it is attached", body = ErrorBody),
        (status = 503, description = "its host is unreachable", body = ErrorBody)))]
pub async fn delete_volume(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.delete_volume(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Attach a volume to a VM on its host. The guest mounts it at `/volumes/<name>` from the
/// VM's next start (the answer says whether that is now).
#[utoipa::path(post, path = "/v1/volumes/{id}/attach", tag = "volumes",
    params(("id" = String, Path, description = "volume id or name")), request_body = AttachVolume,
    responses((status = 200, body = VolumeChange), (status = 404, body = ErrorBody),
        (status = 409, description = "already attached, on another host, or the VM has a volume of that name", body = ErrorBody)))]
pub async fn attach_volume(
    State(app): State<App>,
    Path(id): Path<String>,
    Json(req): Json<AttachVolume>,
) -> ApiResult<Json<VolumeChange>> {
    Ok(Json(app.attach_volume(&id, req).await?))
}

/// Detach a volume from its (stopped) VM.
#[utoipa::path(post, path = "/v1/volumes/{id}/detach", tag = "volumes",
    params(("id" = String, Path, description = "volume id or name")),
    responses((status = 200, body = VolumeChange), (status = 404, body = ErrorBody),
        (status = 409, description = "not attached, or its VM runs", body = ErrorBody)))]
pub async fn detach_volume(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<Json<VolumeChange>> {
    Ok(Json(app.detach_volume(&id).await?))
}
