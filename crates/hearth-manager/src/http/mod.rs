//! The manager's HTTP surface: the `/v1` REST API, ops routes, Swagger UI, the web console
//! (at `/`, see [`web`]), and the agents' gRPC registry on the same port.
//!
//! Handlers are thin: extract, call the app layer, return. Cross-cutting work is middleware,
//! applied to every route in one place: request ids and tracing, metrics, authentication with
//! the [`policy`] table, and the audit log of mutating calls. The route list and the OpenAPI
//! document come from the same `routes!` calls, so they cannot disagree.

mod auth;
pub mod extract;
mod functions;
mod hosts;
mod images;
mod networks;
mod ops;
pub mod policy;
mod snapshots;
mod templates;
mod users;
mod vms;
mod volumes;
mod web;

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::Utc;
use hearth_agent_api::RegistryServer;
use hearth_types::new_id;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::app::{App, Principal};
use crate::error::ApiError;
use crate::metrics::HttpLabels;
use policy::Access;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(title = "Hearth API", description = "The Hearth microVM platform's REST API. Every `/v1` route but login needs `Authorization: Bearer <session token or API key>`."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "auth"), (name = "users"), (name = "api-keys"), (name = "hosts"),
        (name = "vms"), (name = "snapshots"), (name = "networks"), (name = "volumes"), (name = "templates"), (name = "images"), (name = "functions"), (name = "events"), (name = "ops"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every API route, with its OpenAPI description.
fn api_routes() -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::whoami))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(
            users::get_user,
            users::update_user,
            users::delete_user
        ))
        .routes(routes!(users::list_api_keys, users::create_api_key))
        .routes(routes!(users::revoke_api_key))
        .routes(routes!(hosts::list_hosts))
        .routes(routes!(hosts::get_host, hosts::remove_host))
        .routes(routes!(hosts::cordon_host))
        .routes(routes!(hosts::uncordon_host))
        .routes(routes!(hosts::drain_host))
        .routes(routes!(hosts::create_join_token))
        .routes(routes!(vms::list_vms, vms::create_vm))
        .routes(routes!(vms::get_vm, vms::update_vm, vms::delete_vm))
        .routes(routes!(vms::start_vm))
        .routes(routes!(vms::stop_vm))
        .routes(routes!(vms::reboot_vm))
        .routes(routes!(vms::pause_vm))
        .routes(routes!(vms::resume_vm))
        .routes(routes!(vms::add_port_forward))
        .routes(routes!(vms::remove_port_forward))
        .routes(routes!(vms::wait_vm))
        .routes(routes!(vms::exec_vm))
        .routes(routes!(vms::console_vm))
        .routes(routes!(vms::shell_vm))
        .routes(routes!(vms::metrics_vm))
        .routes(routes!(vms::list_images, images::import_image))
        .routes(routes!(images::build_image))
        .routes(routes!(images::get_image_build))
        .routes(routes!(snapshots::create_snapshot))
        .routes(routes!(snapshots::list_snapshots))
        .routes(routes!(snapshots::get_snapshot, snapshots::delete_snapshot))
        .routes(routes!(snapshots::restore_snapshot))
        .routes(routes!(networks::list_networks, networks::create_network))
        .routes(routes!(networks::get_network, networks::delete_network))
        .routes(routes!(volumes::list_volumes, volumes::create_volume))
        .routes(routes!(
            volumes::get_volume,
            volumes::resize_volume,
            volumes::delete_volume
        ))
        .routes(routes!(volumes::attach_volume))
        .routes(routes!(volumes::detach_volume))
        .routes(routes!(
            templates::list_templates,
            templates::create_template
        ))
        .routes(routes!(templates::get_template, templates::delete_template))
        .routes(routes!(templates::instantiate))
        .merge(function_routes())
        .routes(routes!(ops::list_events))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::cluster_ca))
        .routes(routes!(ops::metrics))
}

/// Functions' routes; creating and updating one carries code, so their bodies may be larger.
fn function_routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(functions::list_runtimes))
        .routes(routes!(functions::get_runtime))
        .routes(routes!(functions::build_runtime))
        .routes(routes!(
            functions::list_functions,
            functions::create_function
        ))
        .routes(routes!(
            functions::get_function,
            functions::update_function,
            functions::delete_function
        ))
        .routes(routes!(functions::invoke_function))
        .routes(routes!(functions::function_logs))
        .routes(routes!(functions::function_metrics))
        .routes(routes!(functions::get_invocation))
        .routes(routes!(functions::function_code))
        .routes(routes!(functions::invocation_rate))
        .routes(routes!(
            functions::list_schedules,
            functions::create_schedule
        ))
        .routes(routes!(functions::delete_schedule))
        .routes(routes!(
            functions::list_versions,
            functions::publish_version
        ))
        .routes(routes!(functions::list_aliases))
        .routes(routes!(functions::set_alias, functions::delete_alias))
        .routes(routes!(functions::list_secrets))
        .routes(routes!(functions::put_secret, functions::delete_secret))
        .layer(DefaultBodyLimit::max(
            crate::app::functions::MAX_CODE_BYTES * 4 / 3 + (64 << 10),
        ))
}

/// The OpenAPI document, as served at `/openapi.json` and committed in `docs/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

/// The manager's whole router.
pub fn router(app: App) -> Router {
    let max_body = app.config().max_body_bytes;
    let (api, doc) = api_routes().split_for_parts();
    let api = api
        .route_layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .route_layer(middleware::from_fn_with_state(app.clone(), audit))
        .route_layer(middleware::from_fn_with_state(app.clone(), observe))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app.clone());
    let grpc = tonic::service::Routes::new(RegistryServer::new(
        crate::registry::RegistryService::new(app.clone()),
    ))
    .into_axum_router();
    Router::new()
        .merge(api)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .merge(grpc)
        .fallback_service(
            Router::new()
                .fallback(web::serve)
                .layer(tower_http::compression::CompressionLayer::new()),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("http", method = %req.method(), uri = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    let body = axum::Json(hearth_types::ErrorBody {
        error: hearth_types::ErrorDetail {
            code: hearth_types::ErrorCode::MethodNotAllowed,
            message: format!("{method} is not allowed on {}", uri.path()),
        },
    });
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, body).into_response()
}

fn route_of(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string())
}

/// Authenticates the bearer credential and applies the [`policy`] table.
async fn authenticate(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let route = route_of(&req);
    let needed = match policy::access(req.method(), &route) {
        Access::Public => return next.run(req).await,
        Access::Role(r) => r,
    };
    let Some(token) = extract::bearer_token(req.headers()) else {
        return ApiError::Unauthenticated(
            "missing `Authorization: Bearer <token>`; log in with `hearth login` or POST /v1/auth/login".into(),
        )
        .into_response();
    };
    let principal = match app.authenticate(token).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = crate::app::require(&principal, needed) {
        let mut resp = e.into_response();
        resp.extensions_mut().insert(principal);
        return resp;
    }
    req.extensions_mut().insert(principal.clone());
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(principal);
    resp
}

/// Names the actor of a request that has no principal (a login attempt).
#[derive(Clone)]
pub struct AuditActor(pub String);

/// Appends every mutating call to the audit log, whatever its outcome.
async fn audit(State(app): State<App>, req: Request, next: Next) -> Response {
    // Reads are not audited, except opening a shell: a GET that runs anything.
    let read = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if read && route_of(&req) != "/v1/vms/{id}/shell" {
        return next.run(req).await;
    }
    let action = format!("{} {}", req.method(), route_of(&req));
    let target = req.uri().path().to_string();
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let resp = next.run(req).await;
    let actor = resp
        .extensions()
        .get::<Principal>()
        .map(Principal::actor)
        .or_else(|| resp.extensions().get::<AuditActor>().map(|a| a.0.clone()))
        .unwrap_or_else(|| "anonymous".into());
    let status = resp.status().as_u16();
    let event = hearth_types::api::Event {
        id: new_id(),
        at: Utc::now(),
        actor,
        action,
        target,
        status,
        result: if status < 400 { "ok" } else { "error" }.into(),
        request_id,
    };
    if let Err(e) = app.store().append_event(&event).await {
        tracing::error!(error = %e, "could not record an audit event");
    }
    resp
}

/// Counts requests and their latency by route template and status.
async fn observe(State(app): State<App>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = route_of(&req);
    let resp = next.run(req).await;
    app.metrics().observe_http(
        HttpLabels {
            method,
            route,
            status: resp.status().as_u16(),
        },
        start.elapsed().as_secs_f64(),
    );
    resp
}
