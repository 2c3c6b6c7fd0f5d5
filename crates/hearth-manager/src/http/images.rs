//! `POST /v1/images` (an upload streamed through `app::images`) and image builds; listing
//! is in `vms`.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use hearth_types::vm::{BuildImage, Image, ImageBuild, ImportImage};
use hearth_types::ErrorBody;

use super::extract::{Json, Path, Query};
use crate::app::App;
use crate::error::ApiResult;

/// Import an image: the body is an OCI image layout (or `docker save` archive) as a tar, or
/// a tar of a root filesystem, streamed (at most `max_image_bytes`). Every host that is up
/// unpacks it into a root filesystem; VMs boot it with `"image": NAME`.
#[utoipa::path(post, path = "/v1/images", tag = "images", params(ImportImage),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = Image),
        (status = 400, description = "a bad name or format, a SHA-256 that differs, or an archive that cannot be read", body = ErrorBody),
        (status = 409, description = "no host is up", body = ErrorBody),
        (status = 413, description = "larger than max_image_bytes", body = ErrorBody)))]
pub async fn import_image(
    State(app): State<App>,
    Query(q): Query<ImportImage>,
    body: Body,
) -> ApiResult<(StatusCode, Json<Image>)> {
    let image = app.import_image(q, body.into_data_stream()).await?;
    Ok((StatusCode::CREATED, Json(image)))
}

/// Build a Debian image with the packages asked for, on every host that is up, in the
/// background (debootstrap; about a minute). Poll `GET /v1/images/builds/{name}`.
#[utoipa::path(post, path = "/v1/images/builds", tag = "images", request_body = BuildImage,
    responses((status = 202, body = ImageBuild), (status = 400, body = ErrorBody),
        (status = 409, description = "no host is up", body = ErrorBody)))]
pub async fn build_image(
    State(app): State<App>,
    Json(req): Json<BuildImage>,
) -> ApiResult<(StatusCode, Json<ImageBuild>)> {
    Ok((StatusCode::ACCEPTED, Json(app.build_image(req).await?)))
}

/// An image build's state on each host: building (with its last step), ready or failed
/// (with why).
#[utoipa::path(get, path = "/v1/images/builds/{name}", tag = "images",
    params(("name" = String, Path, description = "the image's name")),
    responses((status = 200, body = ImageBuild), (status = 400, body = ErrorBody)))]
pub async fn get_image_build(
    State(app): State<App>,
    Path(name): Path<String>,
) -> ApiResult<Json<ImageBuild>> {
    Ok(Json(app.image_build(&name).await?))
}
