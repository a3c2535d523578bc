//! The event-type catalog: the built-in types, and those the operator adds so that
//! providers' new events can be published and subscribed to without a release.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hookline_core::catalog;
use hookline_core::http::{ApiResult, AppState, Caller, ErrorBody, JsonBody};
use hookline_core::model::CustomEventType;
use hookline_core::Error;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use utoipa::ToSchema;

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
        (status = 201, description = "The added type", body = EventTypeView),
        (status = 400, description = "Invalid body, name, provider, description or sample", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the operator key", body = ErrorBody),
        (status = 409, description = "A built-in or added type has this name", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ),
    security(("operator_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateEventType>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_operator()?;
    let def = parse(req, state.clock.now(), state.config.max_payload)?;
    if catalog::lookup(&def.name).is_some() {
        return Err(exists(&def.name).into());
    }
    state.store.create_event_type(&def).await?;
    tracing::info!(event_type = %def.name, provider = %def.provider, "event type added");
    let body = serde_json::to_value(EventTypeView::from(&def)).expect("view serializes");
    Ok((StatusCode::CREATED, Json(body)))
}

/// The built-in types in catalog order, then the added ones by name.
#[utoipa::path(
    get,
    path = "/v1/event-types",
    tag = "event-types",
    operation_id = "list_event_types",
    responses(
        (status = 200, description = "The catalog, with a sample payload each", body = EventTypeList),
        (status = 401, description = "No valid key", body = ErrorBody),
    ),
    security(("tenant_key" = []), ("operator_key" = []))
)]
pub async fn list(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<Value>> {
    let added = state.store.list_event_types().await?;
    let data: Vec<EventTypeView> = catalog::builtin()
        .iter()
        .map(EventTypeView::from)
        .chain(added.iter().map(EventTypeView::from))
        .collect();
    Ok(Json(json!({ "data": data })))
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
