//! The operator's own routes: the endpoints that receive Hookline's operational events for
//! every tenant (kept under the reserved operator tenant, in the shape of a tenant's), and
//! the dead-letter queue, listed and redriven.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Json;
use hookline_core::envelope::json_or_default;
use hookline_core::http::{
    page_body, ApiResult, AppState, Caller, ErrorBody, IfMatch, JsonBody, Paging, RawBody,
};
use hookline_core::operational::OPERATOR_TENANT;
use hookline_core::ports::SharedDeadLetters;
use hookline_core::Error;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::endpoints::{self, paging, CreateEndpoint, UpdateEndpoint, IF_MATCH_DOC};
use crate::openapi::{DeadLetterList, EndpointList, Redriven, SecretKey};
use crate::views::{DeadLetterView, EndpointView};

#[utoipa::path(
    post,
    path = "/v1/operator/endpoints",
    tag = "operator",
    operation_id = "create_operator_endpoint",
    request_body = CreateEndpoint,
    responses(
        (status = 201, description = "The endpoint; it receives the `hookline.` operational events of every tenant (those of `event_types` when set)", body = EndpointView,
            headers(("ETag" = String, description = "The endpoint's revision, for `If-Match`"))),
        (status = 400, description = "Invalid body, URL, event type, format or secret", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the operator key", body = ErrorBody),
        (status = 409, description = "`too_many_endpoints`", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "`rate_limit` out of range, or `verify`: the test event got no 2xx", body = ErrorBody),
    ),
    security(("operator_key" = []))
)]
pub async fn create_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateEndpoint>,
) -> ApiResult<Response> {
    caller.require_operator()?;
    endpoints::create_for(&state, OPERATOR_TENANT, req).await
}

#[utoipa::path(
    get,
    path = "/v1/operator/endpoints",
    tag = "operator",
    operation_id = "list_operator_endpoints",
    params(Paging),
    responses(
        (status = 200, description = "A page of the operator's endpoints, oldest first", body = EndpointList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the operator key", body = ErrorBody),
    ),
    security(("operator_key" = []))
)]
pub async fn list_endpoints(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Paging>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    caller.require_operator()?;
    endpoints::list_for(&state, OPERATOR_TENANT, query).await
}

#[utoipa::path(
    get,
    path = "/v1/operator/endpoints/{id}",
    tag = "operator",
    operation_id = "get_operator_endpoint",
    params(("id" = String, Path, description = "Endpoint id (`ep_…`)")),
    responses(
        (status = 200, description = "The endpoint", body = EndpointView,
            headers(("ETag" = String, description = "The endpoint's revision, for `If-Match`"))),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the operator key", body = ErrorBody),
        (status = 404, description = "Not one of the operator's endpoints", body = ErrorBody),
    ),
    security(("operator_key" = []))
)]
pub async fn get_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require_operator()?;
    endpoints::get_for(&state, OPERATOR_TENANT, &id).await
}

/// Changes the fields given, as `PATCH /v1/endpoints/{id}` does.
#[utoipa::path(
    patch,
    path = "/v1/operator/endpoints/{id}",
    tag = "operator",
    operation_id = "update_operator_endpoint",
    params(
        ("id" = String, Path, description = "Endpoint id (`ep_…`)"),
        ("If-Match" = Option<String>, Header, description = IF_MATCH_DOC),
    ),
    request_body = UpdateEndpoint,
    responses(
        (status = 200, description = "The changed endpoint", body = EndpointView,
            headers(("ETag" = String, description = "The endpoint's new revision"))),
        (status = 400, description = "Invalid body, field or If-Match", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the operator key", body = ErrorBody),
        (status = 404, description = "Not one of the operator's endpoints", body = ErrorBody),
        (status = 409, description = "`concurrent_update`", body = ErrorBody),
        (status = 412, description = "`precondition_failed`", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "`rate_limit` out of range, or `verify`: the test event got no 2xx", body = ErrorBody),
    ),
    security(("operator_key" = []))
)]
pub async fn update_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    if_match: IfMatch,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateEndpoint>,
) -> ApiResult<Response> {
    caller.require_operator()?;
    endpoints::update_for(&state, OPERATOR_TENANT, &if_match, &id, req).await
}

#[utoipa::path(
    delete,
    path = "/v1/operator/endpoints/{id}",
    tag = "operator",
    operation_id = "delete_operator_endpoint",
    params(
        ("id" = String, Path, description = "Endpoint id (`ep_…`)"),
        ("If-Match" = Option<String>, Header, description = IF_MATCH_DOC),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid If-Match", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the operator key", body = ErrorBody),
        (status = 404, description = "Not one of the operator's endpoints", body = ErrorBody),
        (status = 412, description = "`precondition_failed`", body = ErrorBody),
    ),
    security(("operator_key" = []))
)]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require_operator()?;
    endpoints::delete_for(&state, OPERATOR_TENANT, &if_match, &id).await
}

#[utoipa::path(
    get,
    path = "/v1/operator/endpoints/{id}/secret",
    tag = "operator",
    operation_id = "get_operator_endpoint_secret",
    params(("id" = String, Path, description = "Endpoint id (`ep_…`)")),
    responses(
        (status = 200, description = "The current signing secret", body = SecretKey),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the operator key", body = ErrorBody),
        (status = 404, description = "Not one of the operator's endpoints", body = ErrorBody),
    ),
    security(("operator_key" = []))
)]
pub async fn endpoint_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_operator()?;
    endpoints::secret_for(&state, OPERATOR_TENANT, &id).await
}

/// The dead-letter queue of this deployment, or 404 where it has none to read.
fn dead_letters(state: &AppState) -> ApiResult<&SharedDeadLetters> {
    Ok(state
        .dead_letters
        .as_ref()
        .ok_or(Error::NotFound("dead-letter queue"))?)
}

/// What went to the dead-letter queue, oldest first: each message's reason, tenant (when
/// its body names one), time and the start of its body.
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    tag = "operator",
    operation_id = "list_dead_letters",
    params(Paging),
    responses(
        (status = 200, description = "A page of the dead letters", body = DeadLetterList),
        (status = 400, description = "Invalid query or cursor", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the operator key", body = ErrorBody),
    ),
    security(("operator_key" = []))
)]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Paging>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    caller.require_operator()?;
    let page = dead_letters(&state)?
        .list_dead_letters(&paging(query)?.query()?)
        .await?;
    let views: Vec<DeadLetterView> = page.items.iter().map(DeadLetterView::from).collect();
    Ok(Json(page_body(&views, page.next_cursor, |v| {
        v.cursor.clone()
    })))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"ids": ["17"]}))]
pub struct RedriveRequest {
    /// The dead letters to redrive, by `id`; absent (or no body) for all of them.
    #[serde(default)]
    ids: Option<Vec<String>>,
}

/// The most ids one redrive names.
const MAX_REDRIVE_IDS: usize = 1000;

/// Puts dead letters back on the events queue, where they are handled as new arrivals: one
/// that fails again goes back to the dead-letter queue with its new reason.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/redrive",
    tag = "operator",
    operation_id = "redrive_dead_letters",
    request_body = Option<RedriveRequest>,
    responses(
        (status = 200, description = "The ids redriven (an id not on the dead-letter queue is left out)", body = Redriven),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the operator key", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ),
    security(("operator_key" = []))
)]
pub async fn redrive(
    State(state): State<AppState>,
    caller: Caller,
    RawBody(body): RawBody,
) -> ApiResult<Json<Value>> {
    caller.require_operator()?;
    let req: RedriveRequest = json_or_default(&body)?;
    if let Some(ids) = &req.ids {
        if ids.is_empty() || ids.len() > MAX_REDRIVE_IDS {
            return Err(Error::invalid(
                "invalid_ids",
                format!("ids must name 1 to {MAX_REDRIVE_IDS} dead letters; omit it for all"),
            )
            .into());
        }
    }
    let redriven = dead_letters(&state)?.redrive(req.ids.as_deref()).await?;
    tracing::info!(count = redriven.len(), "dead letters redriven");
    Ok(Json(json!({ "redriven": redriven })))
}
