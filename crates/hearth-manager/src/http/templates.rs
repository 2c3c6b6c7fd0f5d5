//! `/v1/templates`. Handlers extract, call `app::templates`, and shape the answer.

use axum::extract::State;
use axum::http::StatusCode;
use hearth_types::api::{ListQuery, Page};
use hearth_types::template::{CreateTemplate, Instantiate, Template};
use hearth_types::vm::Vm;
use hearth_types::ErrorBody;

use super::extract::{Json, Path, Query};
use crate::app::App;
use crate::error::ApiResult;

#[utoipa::path(get, path = "/v1/templates", tag = "templates", params(ListQuery),
    responses((status = 200, body = Page<Template>)))]
pub async fn list_templates(
    State(app): State<App>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<Template>>> {
    Ok(Json(
        app.list_templates(q.cursor.as_deref(), q.limit).await?,
    ))
}

#[utoipa::path(post, path = "/v1/templates", tag = "templates", request_body = CreateTemplate,
    responses((status = 201, body = Template), (status = 400, body = ErrorBody), (status = 409, description = "the name is taken", body = ErrorBody)))]
pub async fn create_template(
    State(app): State<App>,
    Json(req): Json<CreateTemplate>,
) -> ApiResult<(StatusCode, Json<Template>)> {
    Ok((StatusCode::CREATED, Json(app.create_template(req).await?)))
}

#[utoipa::path(get, path = "/v1/templates/{id}", tag = "templates",
    params(("id" = String, Path, description = "template id or name")),
    responses((status = 200, body = Template), (status = 404, body = ErrorBody)))]
pub async fn get_template(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<Json<Template>> {
    Ok(Json(app.template(&id).await?))
}

/// Delete a template (its instances stay).
#[utoipa::path(delete, path = "/v1/templates/{id}", tag = "templates",
    params(("id" = String, Path, description = "template id or name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_template(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.delete_template(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Make a VM from a template (its volumes made and attached, its user data run at first
/// boot). Answers with the VM `starting`; `wait` for `running`.
#[utoipa::path(post, path = "/v1/templates/{id}/instantiate", tag = "templates",
    params(("id" = String, Path, description = "template id or name")), request_body = Instantiate,
    responses((status = 202, body = Vm), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "a name is taken or no host can take it", body = ErrorBody)))]
pub async fn instantiate(
    State(app): State<App>,
    Path(id): Path<String>,
    Json(req): Json<Instantiate>,
) -> ApiResult<(StatusCode, Json<Vm>)> {
    Ok((StatusCode::ACCEPTED, Json(app.instantiate(&id, req).await?)))
}
