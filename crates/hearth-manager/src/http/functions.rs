//! `/v1/functions`, `/v1/invocations`, `/v1/runtimes`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hearth_types::api::{ListQuery, Page};
use hearth_types::function::{
    Alias, CreateFunction, CreateSchedule, Function, FunctionMetrics, FunctionVersion, Invocation,
    InvocationRate, InvokeQuery, InvokeResult, LogsQuery, PutSecret, RateQuery, RuntimeInfo,
    Schedule, Secret, SetAlias, UpdateFunction,
};
use hearth_types::ErrorBody;

use super::extract::{Caller, Json, Path, Query};
use crate::app::App;
use crate::error::ApiResult;

/// The runtimes functions can use, and which are available on this installation.
#[utoipa::path(get, path = "/v1/runtimes", tag = "functions",
    responses((status = 200, body = Page<RuntimeInfo>)))]
pub async fn list_runtimes(State(app): State<App>) -> ApiResult<Json<Page<RuntimeInfo>>> {
    Ok(Json(Page {
        items: app.runtimes().await?,
        next_cursor: None,
    }))
}

/// One runtime, with each host's image state (a build's progress).
#[utoipa::path(get, path = "/v1/runtimes/{name}", tag = "functions",
    params(("name" = String, Path)),
    responses((status = 200, body = RuntimeInfo), (status = 404, body = ErrorBody)))]
pub async fn get_runtime(
    State(app): State<App>,
    Path(name): Path<String>,
) -> ApiResult<Json<RuntimeInfo>> {
    Ok(Json(app.runtime(&name).await?))
}

/// Builds the runtime's image on every ready host that lacks it (debootstrap from the
/// host's Debian mirror; a minute or two). Answers at once; follow with
/// `GET /v1/runtimes/{name}`.
#[utoipa::path(post, path = "/v1/runtimes/{name}/build", tag = "functions",
    params(("name" = String, Path)),
    responses((status = 202, body = RuntimeInfo), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn build_runtime(
    State(app): State<App>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<RuntimeInfo>)> {
    Ok((StatusCode::ACCEPTED, Json(app.build_runtime(&name).await?)))
}

#[utoipa::path(get, path = "/v1/functions", tag = "functions", params(ListQuery),
    responses((status = 200, body = Page<Function>)))]
pub async fn list_functions(
    State(app): State<App>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<Function>>> {
    Ok(Json(
        app.list_functions(q.cursor.as_deref(), q.limit).await?,
    ))
}

/// Deploy a function (its VMs boot on the first invocation, or at once for `min_warm`).
#[utoipa::path(post, path = "/v1/functions", tag = "functions", request_body = CreateFunction,
    responses((status = 201, body = Function),
        (status = 400, description = "bad fields, or an unknown or unavailable runtime (the message lists them)", body = ErrorBody),
        (status = 409, description = "the name is taken", body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn create_function(
    State(app): State<App>,
    Json(req): Json<CreateFunction>,
) -> ApiResult<(StatusCode, Json<Function>)> {
    Ok((StatusCode::CREATED, Json(app.create_function(req).await?)))
}

#[utoipa::path(get, path = "/v1/functions/{name}", tag = "functions", params(("name" = String, Path, description = "Function name or id")),
    responses((status = 200, body = Function), (status = 404, body = ErrorBody)))]
pub async fn get_function(
    State(app): State<App>,
    Path(name): Path<String>,
) -> ApiResult<Json<Function>> {
    Ok(Json(app.function(&name).await?))
}

/// The function's latest code: `text/plain` when it is one text file, else the archive it
/// was deployed from (`application/gzip`).
#[utoipa::path(get, path = "/v1/functions/{name}/code", tag = "functions", params(("name" = String, Path, description = "Function name or id")),
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = ErrorBody)))]
pub async fn function_code(
    State(app): State<App>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let code = app.function_code(&name).await?;
    let kind = if code.starts_with(&[0x1f, 0x8b]) || std::str::from_utf8(&code).is_err() {
        "application/gzip"
    } else {
        "text/plain; charset=utf-8"
    };
    Ok(([(axum::http::header::CONTENT_TYPE, kind)], code).into_response())
}

/// Invocations per minute across all functions, for the dashboard.
#[utoipa::path(get, path = "/v1/stats/invocations", tag = "functions", params(RateQuery),
    responses((status = 200, body = InvocationRate), (status = 400, body = ErrorBody)))]
pub async fn invocation_rate(
    State(app): State<App>,
    Query(q): Query<RateQuery>,
) -> ApiResult<Json<InvocationRate>> {
    Ok(Json(app.invocation_rate(q.minutes).await?))
}

/// Change a function. New code (or a new size) retires its VMs as they go idle.
#[utoipa::path(patch, path = "/v1/functions/{name}", tag = "functions", params(("name" = String, Path, description = "Function name or id")),
    request_body = UpdateFunction,
    responses((status = 200, body = Function), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn update_function(
    State(app): State<App>,
    Path(name): Path<String>,
    Json(req): Json<UpdateFunction>,
) -> ApiResult<Json<Function>> {
    Ok(Json(app.update_function(&name, req).await?))
}

/// Delete a function, its VMs and its invocation log.
#[utoipa::path(delete, path = "/v1/functions/{name}", tag = "functions", params(("name" = String, Path, description = "Function name or id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_function(
    State(app): State<App>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    app.delete_function(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Invoke a function with the request body (JSON) as its event; `?async=true` queues it.
/// `{name}` may be `NAME:VERSION` or `NAME:ALIAS`.
#[utoipa::path(post, path = "/v1/functions/{name}/invoke", tag = "functions", params(("name" = String, Path, description = "Function name or id"), InvokeQuery),
    request_body(content = Object, description = "The event (any JSON)"),
    responses((status = 200, description = "The call ran; `error` is set when the handler failed", body = InvokeResult),
        (status = 202, description = "Queued (`?async=true`); poll `GET /v1/invocations/{id}`", body = Invocation),
        (status = 400, description = "the event is not JSON", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 429, description = "over the function's or the caller's rate limit, or every VM the function may have is busy and the queue is full (see Retry-After)", body = ErrorBody),
        (status = 503, description = "a VM or its host failed; the VM was retired", body = ErrorBody)))]
pub async fn invoke_function(
    State(app): State<App>,
    Caller(p): Caller,
    Path(name): Path<String>,
    Query(q): Query<InvokeQuery>,
    body: Bytes,
) -> ApiResult<Response> {
    let caller = p.actor();
    if q.async_.unwrap_or(false) {
        let queued = app.invoke_async(&caller, &name, &body).await?;
        return Ok((StatusCode::ACCEPTED, Json(queued)).into_response());
    }
    Ok(Json(app.invoke(&caller, &name, &body).await?).into_response())
}

#[utoipa::path(get, path = "/v1/functions/{name}/schedules", tag = "functions", params(("name" = String, Path, description = "Function name or id")),
    responses((status = 200, body = Page<Schedule>), (status = 404, body = ErrorBody)))]
pub async fn list_schedules(
    State(app): State<App>,
    Path(name): Path<String>,
) -> ApiResult<Json<Page<Schedule>>> {
    Ok(Json(Page {
        items: app.list_schedules(&name).await?,
        next_cursor: None,
    }))
}

/// Invoke the function on a schedule (`@every 30s`, `@hourly`, `@daily`, 5-field cron, UTC).
#[utoipa::path(post, path = "/v1/functions/{name}/schedules", tag = "functions", params(("name" = String, Path, description = "Function name or id")),
    request_body = CreateSchedule,
    responses((status = 201, body = Schedule), (status = 400, description = "not a schedule expression", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "too many schedules", body = ErrorBody)))]
pub async fn create_schedule(
    State(app): State<App>,
    Path(name): Path<String>,
    Json(req): Json<CreateSchedule>,
) -> ApiResult<(StatusCode, Json<Schedule>)> {
    Ok((
        StatusCode::CREATED,
        Json(app.create_schedule(&name, req).await?),
    ))
}

#[utoipa::path(delete, path = "/v1/functions/{name}/schedules/{id}", tag = "functions",
    params(("name" = String, Path, description = "Function name or id"), ("id" = String, Path, description = "Schedule id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_schedule(
    State(app): State<App>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    app.delete_schedule(&name, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The newest invocations, with their logs.
#[utoipa::path(get, path = "/v1/functions/{name}/logs", tag = "functions", params(("name" = String, Path, description = "Function name or id"), LogsQuery),
    responses((status = 200, body = Page<Invocation>), (status = 404, body = ErrorBody)))]
pub async fn function_logs(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Json<Page<Invocation>>> {
    Ok(Json(app.function_logs(&name, q.limit).await?))
}

#[utoipa::path(get, path = "/v1/functions/{name}/metrics", tag = "functions", params(("name" = String, Path, description = "Function name or id")),
    responses((status = 200, body = FunctionMetrics), (status = 404, body = ErrorBody)))]
pub async fn function_metrics(
    State(app): State<App>,
    Path(name): Path<String>,
) -> ApiResult<Json<FunctionMetrics>> {
    Ok(Json(app.function_metrics(&name).await?))
}

#[utoipa::path(get, path = "/v1/invocations/{id}", tag = "functions", params(("id" = String, Path, description = "Invocation id")),
    responses((status = 200, body = Invocation), (status = 404, body = ErrorBody)))]
pub async fn get_invocation(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<Json<Invocation>> {
    Ok(Json(app.invocation(&id).await?))
}

#[utoipa::path(get, path = "/v1/functions/{name}/versions", tag = "functions", params(("name" = String, Path, description = "Function name or id")),
    responses((status = 200, body = Page<FunctionVersion>), (status = 404, body = ErrorBody)))]
pub async fn list_versions(
    State(app): State<App>,
    Path(name): Path<String>,
) -> ApiResult<Json<Page<FunctionVersion>>> {
    Ok(Json(Page {
        items: app.list_versions(&name).await?,
        next_cursor: None,
    }))
}

/// Publish the function as it is now as an immutable version (invoke it as `NAME:N`).
#[utoipa::path(post, path = "/v1/functions/{name}/versions", tag = "functions", params(("name" = String, Path, description = "Function name or id")),
    responses((status = 201, body = FunctionVersion), (status = 404, body = ErrorBody)))]
pub async fn publish_version(
    State(app): State<App>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<FunctionVersion>)> {
    Ok((StatusCode::CREATED, Json(app.publish_version(&name).await?)))
}

#[utoipa::path(get, path = "/v1/functions/{name}/aliases", tag = "functions", params(("name" = String, Path, description = "Function name or id")),
    responses((status = 200, body = Page<Alias>), (status = 404, body = ErrorBody)))]
pub async fn list_aliases(
    State(app): State<App>,
    Path(name): Path<String>,
) -> ApiResult<Json<Page<Alias>>> {
    Ok(Json(Page {
        items: app.list_aliases(&name).await?,
        next_cursor: None,
    }))
}

/// Point an alias (invoke it as `NAME:ALIAS`) at a version, optionally sending a share of
/// calls to others.
#[utoipa::path(put, path = "/v1/functions/{name}/aliases/{alias}", tag = "functions",
    params(("name" = String, Path, description = "Function name or id"), ("alias" = String, Path, description = "Alias name")),
    request_body = SetAlias,
    responses((status = 200, body = Alias), (status = 400, body = ErrorBody), (status = 404, description = "no such function or version", body = ErrorBody)))]
pub async fn set_alias(
    State(app): State<App>,
    Path((name, alias)): Path<(String, String)>,
    Json(req): Json<SetAlias>,
) -> ApiResult<Json<Alias>> {
    Ok(Json(app.set_alias(&name, &alias, req).await?))
}

#[utoipa::path(delete, path = "/v1/functions/{name}/aliases/{alias}", tag = "functions",
    params(("name" = String, Path, description = "Function name or id"), ("alias" = String, Path, description = "Alias name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_alias(
    State(app): State<App>,
    Path((name, alias)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    app.delete_alias(&name, &alias).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Secrets' names (values are never returned).
#[utoipa::path(get, path = "/v1/secrets", tag = "functions",
    responses((status = 200, body = Page<Secret>)))]
pub async fn list_secrets(State(app): State<App>) -> ApiResult<Json<Page<Secret>>> {
    Ok(Json(Page {
        items: app.list_secrets().await?,
        next_cursor: None,
    }))
}

/// Create or replace a secret; functions refer to it from `secrets` in their definition.
#[utoipa::path(put, path = "/v1/secrets/{name}", tag = "functions", params(("name" = String, Path, description = "Secret name")),
    request_body = PutSecret,
    responses((status = 200, body = Secret), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn put_secret(
    State(app): State<App>,
    Path(name): Path<String>,
    Json(req): Json<PutSecret>,
) -> ApiResult<Json<Secret>> {
    Ok(Json(app.put_secret(&name, req).await?))
}

#[utoipa::path(delete, path = "/v1/secrets/{name}", tag = "functions", params(("name" = String, Path, description = "Secret name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_secret(
    State(app): State<App>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    app.delete_secret(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
