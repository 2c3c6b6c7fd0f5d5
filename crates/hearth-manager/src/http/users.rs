//! `/v1/users` (admin only) and `/v1/api-keys`.

use axum::extract::State;
use axum::http::StatusCode;
use hearth_types::api::{ListQuery, Page};
use hearth_types::auth::{ApiKey, CreateApiKey, CreateUser, CreatedApiKey, UpdateUser, User};
use hearth_types::ErrorBody;

use super::extract::{Caller, Json, Path, Query};
use crate::app::App;
use crate::error::ApiResult;

#[utoipa::path(get, path = "/v1/users", tag = "users", params(ListQuery),
    responses((status = 200, body = Page<User>), (status = 403, body = ErrorBody)))]
pub async fn list_users(
    State(app): State<App>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<User>>> {
    Ok(Json(app.list_users(q.cursor.as_deref(), q.limit).await?))
}

#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = User), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_user(
    State(app): State<App>,
    Json(req): Json<CreateUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    Ok((StatusCode::CREATED, Json(app.create_user(req).await?)))
}

#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", params(("id" = String, Path, description = "User id or username")),
    responses((status = 200, body = User), (status = 404, body = ErrorBody)))]
pub async fn get_user(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<User>> {
    Ok(Json(app.user(&id).await?))
}

#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", params(("id" = String, Path, description = "User id or username")),
    request_body = UpdateUser,
    responses((status = 200, body = User), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_user(
    State(app): State<App>,
    Caller(p): Caller,
    Path(id): Path<String>,
    Json(req): Json<UpdateUser>,
) -> ApiResult<Json<User>> {
    Ok(Json(app.update_user(&p, &id, req).await?))
}

#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users", params(("id" = String, Path, description = "User id or username")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_user(
    State(app): State<App>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.delete_user(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Your API keys (an admin sees all).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", params(ListQuery),
    responses((status = 200, body = Page<ApiKey>)))]
pub async fn list_api_keys(
    State(app): State<App>,
    Caller(p): Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<ApiKey>>> {
    Ok(Json(
        app.list_api_keys(&p, q.cursor.as_deref(), q.limit).await?,
    ))
}

/// Create an API key for yourself. The secret is in this response only.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_api_key(
    State(app): State<App>,
    Caller(p): Caller,
    Json(req): Json<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    Ok((
        StatusCode::CREATED,
        Json(app.create_api_key(&p, req).await?),
    ))
}

#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys", params(("id" = String, Path, description = "API key id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_api_key(
    State(app): State<App>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.revoke_api_key(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
