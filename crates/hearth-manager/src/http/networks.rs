//! `/v1/networks`. Handlers extract, call `app::networks`, and shape the answer.

use axum::extract::State;
use axum::http::StatusCode;
use hearth_types::network::{CreateNetwork, Network};
use hearth_types::ErrorBody;

use super::extract::{Json, Path};
use crate::app::App;
use crate::error::ApiResult;

/// Every managed network (each has a CIDR of its own, so there are few).
#[utoipa::path(get, path = "/v1/networks", tag = "networks",
    responses((status = 200, body = Vec<Network>)))]
pub async fn list_networks(State(app): State<App>) -> ApiResult<Json<Vec<Network>>> {
    Ok(Json(app.list_networks().await?))
}

/// Create a network. Hosts build its bridge when a VM on it first starts there.
#[utoipa::path(post, path = "/v1/networks", tag = "networks", request_body = CreateNetwork,
    responses((status = 201, body = Network), (status = 400, body = ErrorBody),
        (status = 409, description = "the name is taken or the CIDR overlaps another network's", body = ErrorBody)))]
pub async fn create_network(
    State(app): State<App>,
    Json(req): Json<CreateNetwork>,
) -> ApiResult<(StatusCode, Json<Network>)> {
    Ok((StatusCode::CREATED, Json(app.create_network(req).await?)))
}

#[utoipa::path(get, path = "/v1/networks/{id}", tag = "networks",
    params(("id" = String, Path, description = "network id or name")),
    responses((status = 200, body = Network), (status = 404, body = ErrorBody)))]
pub async fn get_network(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<Json<Network>> {
    Ok(Json(app.network(&id).await?))
}

/// Delete a network no VM is on, and its bridge and rules on every host.
#[utoipa::path(delete, path = "/v1/networks/{id}", tag = "networks",
    params(("id" = String, Path, description = "network id or name")),
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 409, description = "VMs are on it", body = ErrorBody)))]
pub async fn delete_network(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.delete_network(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
