//! Operations routes: health, readiness, metrics, the audit log.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use hearth_types::api::{Event, Health, ListQuery, Page};
use hearth_types::ErrorBody;

use super::extract::{Json, Query};
use crate::app::{page_limit, App};
use crate::error::{ApiError, ApiResult};

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "ops", security(()), responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The manager can serve: its database answers.
#[utoipa::path(get, path = "/readyz", tag = "ops", security(()),
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(app): State<App>) -> ApiResult<Json<Health>> {
    app.store()
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(format!("database unavailable: {e}")))?;
    Ok(Json(Health {
        status: "ready".into(),
    }))
}

/// The cluster CA's certificate (PEM): it issues the manager's certificate when the manager
/// serves TLS, and every agent's. Its SHA-256 is the part of a join token after the dot.
#[utoipa::path(get, path = "/v1/cluster/ca", tag = "hosts", security(()),
    responses((status = 200, content_type = "application/x-pem-file", body = String)))]
pub async fn cluster_ca(State(app): State<App>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
        app.cluster_ca().cert_pem().to_string(),
    )
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(app): State<App>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics().render(),
    )
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(ListQuery), responses((status = 200, body = Page<Event>)))]
pub async fn list_events(
    State(app): State<App>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<Event>>> {
    let p = app
        .store()
        .list_events(q.cursor.as_deref(), page_limit(q.limit)?)
        .await?;
    Ok(Json(crate::app::page(p, |e| e)))
}
