//! The event-type catalog: the built-in types, and those the operator adds so that
//! providers' new events can be published and subscribed to without a release.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use hookline_core::catalog;
use hookline_core::http::{
    page_body, with_etag, ApiResult, AppState, Caller, ErrorBody, JsonBody, Paging,
};
use hookline_core::model::{CustomEventType, PageQuery};
use hookline_core::Error;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa::ToSchema;

use crate::endpoints::paging;
use crate::openapi::EventTypeList;
use crate::views::EventTypeView;

/// The provider of a type added without one.
const DEFAULT_PROVIDER: &str = "custom";
const MAX_PROVIDER: usize = 64;
const MAX_DESCRIPTION: usize = 1024;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "campaign.archived",
    "description": "A campaign was archived",
    "provider": "custom",
    "sample": {"event": "campaign.archived", "campaign_id": 42}
}))]
pub struct CreateEventType {
    name: String,
    /// At most 1024 characters.
    description: String,
    /// 1 to 64 printable characters; `custom` when absent.
    #[serde(default)]
    provider: Option<String>,
    /// Kept as sent, so it is served byte for byte like the built-in samples.
    #[schema(value_type = Object)]
    sample: Box<RawValue>,
}

/// Adds an event type (operator only). Its name must not be a built-in or stored one.
#[utoipa::path(
    post,
    path = "/v1/event-types",
    tag = "event-types",
    operation_id = "create_event_type",
    request_body = CreateEventType,
    responses(
        (status = 201, description = "The added type", body = EventTypeView,
            headers(("ETag" = String, description = "The type's revision"))),
        (status = 400, description = "Invalid body, name, provider, description or sample", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the operator key", body = ErrorBody),
        (status = 409, description = "A built-in or added type has this name", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "`reserved_event_type`: the name starts with `hookline.`, the prefix of Hookline's operational events", body = ErrorBody),
    ),
    security(("operator_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateEventType>,
) -> ApiResult<Response> {
    caller.require_operator()?;
    let def = parse(req, state.clock.now(), state.config.max_payload)?;
    catalog::check_not_reserved(&def.name)?;
    if catalog::lookup(&def.name).is_some() {
        return Err(exists(&def.name).into());
    }
    state.store.create_event_type(&def).await?;
    tracing::info!(event_type = %def.name, provider = %def.provider, "event type added");
    Ok(with_etag(
        &added_revision(&def),
        (StatusCode::CREATED, Json(EventTypeView::from(&def))),
    ))
}

/// The revision of a type the operator added: types do not change once made.
fn added_revision(def: &CustomEventType) -> String {
    format!("c{}", def.created_at)
}

/// The revision of every built-in type: they change only with a release.
const BUILTIN_REVISION: &str = "builtin";

/// One type of the catalog, built in or added.
#[utoipa::path(
    get,
    path = "/v1/event-types/{name}",
    tag = "event-types",
    operation_id = "get_event_type",
    params(("name" = String, Path, description = "The type's name")),
    responses(
        (status = 200, description = "The type, with a sample payload", body = EventTypeView,
            headers(("ETag" = String, description = "The type's revision"))),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such type", body = ErrorBody),
    ),
    security(("tenant_key" = []), ("operator_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    if let Some(def) = catalog::lookup(&name) {
        return Ok(with_etag(BUILTIN_REVISION, Json(EventTypeView::from(def))));
    }
    if catalog::check_name_syntax(&name).is_err() {
        return Err(Error::NotFound("event type").into());
    }
    let def = state
        .store
        .get_event_type(&name)
        .await?
        .ok_or(Error::NotFound("event type"))?;
    Ok(with_etag(
        &added_revision(&def),
        Json(EventTypeView::from(&def)),
    ))
}

/// The built-in types in catalog order, then the added ones by name, a page at a time;
/// the cursor is the last type's name.
#[utoipa::path(
    get,
    path = "/v1/event-types",
    tag = "event-types",
    operation_id = "list_event_types",
    params(Paging),
    responses(
        (status = 200, description = "A page of the catalog, with a sample payload each", body = EventTypeList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
    ),
    security(("tenant_key" = []), ("operator_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    query: Result<Query<Paging>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let PageQuery { after, limit } = paging(query)?.query()?;
    let builtins = catalog::builtin();
    // Where the page starts: after a built-in type, or among the added ones.
    let (start, added_after) = match after {
        None => (0, None),
        Some(name) => match builtins.iter().position(|d| d.name == name) {
            Some(i) => (i + 1, None),
            None => (builtins.len(), Some(name)),
        },
    };
    let shown = &builtins[start.min(builtins.len())..];
    let shown = &shown[..shown.len().min(limit)];
    let room = limit - shown.len();
    let added = state
        .store
        .list_event_types(&PageQuery {
            after: added_after,
            limit: room.max(1),
        })
        .await?;
    let mut views: Vec<EventTypeView> = shown.iter().map(EventTypeView::from).collect();
    let next_cursor = if room == 0 {
        // A page of built-ins only: more follows if there are built-ins left or any type
        // was added.
        let more = start + shown.len() < builtins.len() || !added.items.is_empty();
        more.then(|| views.last().map(|v| v.name.to_string()))
            .flatten()
    } else {
        views.extend(added.items.iter().map(EventTypeView::from));
        added.next_cursor.clone()
    };
    Ok(Json(page_body(&views, next_cursor, |v| v.name.to_string())))
}

fn parse(req: CreateEventType, now: i64, max_sample: usize) -> Result<CustomEventType, Error> {
    catalog::check_name_syntax(&req.name).map_err(|m| Error::invalid("invalid_name", m))?;
    let provider = req.provider.unwrap_or_else(|| DEFAULT_PROVIDER.to_string());
    if provider.is_empty()
        || provider.chars().count() > MAX_PROVIDER
        || provider.chars().any(char::is_control)
        || provider.trim() != provider
    {
        return Err(Error::invalid(
            "invalid_provider",
            format!("provider must be 1 to {MAX_PROVIDER} printable characters"),
        ));
    }
    if req.description.chars().count() > MAX_DESCRIPTION {
        return Err(Error::invalid(
            "invalid_description",
            format!("description is limited to {MAX_DESCRIPTION} characters"),
        ));
    }
    // Valid JSON already (it parsed); an object is one that starts with a brace.
    if !req.sample.get().trim_start().starts_with('{') {
        return Err(Error::invalid(
            "invalid_sample",
            "sample must be a JSON object",
        ));
    }
    if req.sample.get().len() > max_sample {
        return Err(Error::invalid(
            "invalid_sample",
            format!("sample is over the payload limit of {max_sample} bytes"),
        ));
    }
    Ok(CustomEventType {
        name: req.name,
        provider,
        description: req.description,
        sample: req.sample,
        created_at: now,
    })
}

fn exists(name: &str) -> Error {
    Error::conflict(
        "event_type_exists",
        format!("event type {name:?} already exists"),
    )
}
