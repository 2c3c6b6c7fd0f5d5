//! `/v1/hosts` and `/v1/hosts/join-tokens`.

use axum::extract::State;
use axum::http::StatusCode;
use hearth_types::api::{ListQuery, Page};
use hearth_types::host::{CreateJoinToken, DrainReport, Host, JoinToken};
use hearth_types::ErrorBody;

use super::extract::{Caller, Json, Path, Query};
use crate::app::App;
use crate::error::ApiResult;

#[utoipa::path(get, path = "/v1/hosts", tag = "hosts", params(ListQuery),
    responses((status = 200, body = Page<Host>)))]
pub async fn list_hosts(
    State(app): State<App>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<Host>>> {
    Ok(Json(app.list_hosts(q.cursor.as_deref(), q.limit).await?))
}

#[utoipa::path(get, path = "/v1/hosts/{id}", tag = "hosts", params(("id" = String, Path, description = "Host id or name")),
    responses((status = 200, body = Host), (status = 404, body = ErrorBody)))]
pub async fn get_host(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Host>> {
    Ok(Json(app.host(&id).await?))
}

/// Stop placing new VMs on a host.
#[utoipa::path(post, path = "/v1/hosts/{id}/cordon", tag = "hosts", params(("id" = String, Path, description = "Host id or name")),
    responses((status = 200, body = Host), (status = 404, body = ErrorBody)))]
pub async fn cordon_host(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Host>> {
    Ok(Json(app.set_cordoned(&id, true).await?))
}

#[utoipa::path(post, path = "/v1/hosts/{id}/uncordon", tag = "hosts", params(("id" = String, Path, description = "Host id or name")),
    responses((status = 200, body = Host), (status = 404, body = ErrorBody)))]
pub async fn uncordon_host(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<Json<Host>> {
    Ok(Json(app.set_cordoned(&id, false).await?))
}

/// Cordon a host and move its VMs to other hosts: what can move does (a cold move), and
/// the report says why the rest stays.
#[utoipa::path(post, path = "/v1/hosts/{id}/drain", tag = "hosts", params(("id" = String, Path, description = "Host id or name")),
    responses((status = 200, body = DrainReport), (status = 404, body = ErrorBody)))]
pub async fn drain_host(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<Json<DrainReport>> {
    Ok(Json(app.drain_host(&id).await?))
}

/// Forget a host. Its agent must join again to come back.
#[utoipa::path(delete, path = "/v1/hosts/{id}", tag = "hosts", params(("id" = String, Path, description = "Host id or name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove_host(State(app): State<App>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    app.remove_host(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A token for `hearth agent --join-token`.
#[utoipa::path(post, path = "/v1/hosts/join-tokens", tag = "hosts", request_body(content = Option<CreateJoinToken>),
    responses((status = 201, body = JoinToken), (status = 400, body = ErrorBody)))]
pub async fn create_join_token(
    State(app): State<App>,
    Caller(p): Caller,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<JoinToken>)> {
    let req: CreateJoinToken = super::extract::json_or_default(&body)?;
    Ok((
        StatusCode::CREATED,
        Json(app.create_join_token(&p, req).await?),
    ))
}
