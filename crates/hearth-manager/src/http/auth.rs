//! `/v1/auth`: login, logout, whoami.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hearth_types::auth::{LoginRequest, LoginResponse, WhoAmI};
use hearth_types::ErrorBody;

use super::extract::{bearer_token, Caller, Json};
use super::AuditActor;
use crate::app::App;
use crate::error::ApiResult;

/// Exchange a username and password for a session token.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", security(()),
    request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody),
              (status = 429, description = "Too many failed logins; see Retry-After", body = ErrorBody)))]
pub async fn login(State(app): State<App>, Json(req): Json<LoginRequest>) -> Response {
    let actor = AuditActor(req.username.clone());
    let mut resp = match app.login(req).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => e.into_response(),
    };
    resp.extensions_mut().insert(actor);
    resp
}

/// End the calling session.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = ErrorBody)))]
pub async fn logout(State(app): State<App>, headers: HeaderMap) -> ApiResult<StatusCode> {
    if let Some(t) = bearer_token(&headers) {
        app.logout(t).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Who the caller is.
#[utoipa::path(get, path = "/v1/auth/whoami", tag = "auth",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub async fn whoami(State(app): State<App>, Caller(p): Caller) -> Json<WhoAmI> {
    Json(app.whoami(&p))
}
