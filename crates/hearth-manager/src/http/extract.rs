//! Extractors whose rejections are [`ApiError`]s, so malformed input gets the one JSON error
//! body instead of axum's plain-text defaults.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;

use crate::app::Principal;
use crate::error::ApiError;

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// The authenticated caller, put there by the auth middleware.
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| ApiError::Unauthenticated("authentication required".into()))
    }
}

/// The bearer token of a request, if any: `Authorization: Bearer T`, or, for browsers,
/// which cannot set headers on a WebSocket, a `bearer.T` entry in `Sec-WebSocket-Protocol`
/// (so the token never appears in a URL or an access log).
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        return v.to_str().ok()?.strip_prefix("Bearer ").map(str::trim);
    }
    headers
        .get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)?
        .to_str()
        .ok()?
        .split(',')
        .find_map(|p| p.trim().strip_prefix(WS_BEARER_PREFIX))
}

/// The subprotocol a browser's WebSocket names, beside its `bearer.T` token entry.
pub const WS_PROTOCOL: &str = "hearth";
const WS_BEARER_PREFIX: &str = "bearer.";

/// Parses an optional JSON body: empty means all defaults.
pub fn json_or_default<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}
