//! The message log: messages, their per-endpoint delivery state and attempts.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use hookline_core::http::{ApiResult, AppState, Caller, ErrorBody};
use hookline_core::ids::MessageId;
use hookline_core::model::{Delivery, Message, MessageQuery};
use hookline_core::Error;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;

use crate::openapi::{AttemptList, MessageDetail, MessageList};
use crate::views::{AttemptView, DeliveryView, MessageView};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 250;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
    /// Page size, 1 to 250 (default 50).
    #[serde(default)]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 250)]
    limit: Option<String>,
    /// Only messages of this event type.
    #[serde(default, rename = "type")]
    event_type: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/messages",
    tag = "messages",
    operation_id = "list_messages",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of the caller's messages, newest first", body = MessageList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant()?;
    let Query(q) = query.map_err(|e| Error::invalid("invalid_query", e.body_text()))?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                Error::invalid(
                    "invalid_query",
                    format!("limit must be between 1 and {MAX_LIMIT}"),
                )
            })?,
    };
    let before = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            MessageId::parse(c)
                .ok_or_else(|| Error::invalid("invalid_cursor", "cursor is not one we issued"))?,
        ),
    };
    let page = state
        .store
        .list_messages(
            tenant,
            &MessageQuery {
                before,
                limit,
                event_type: q.event_type,
            },
        )
        .await?;
    let data: Vec<MessageView> = page.items.iter().map(MessageView::from).collect();
    Ok(Json(
        json!({ "data": data, "next_cursor": page.next_cursor }),
    ))
}

async fn load(state: &AppState, caller: Caller, id: &str) -> ApiResult<Message> {
    let tenant = caller.tenant()?;
    let id = MessageId::parse(id).ok_or(Error::NotFound("message"))?;
    Ok(state
        .store
        .get_message(tenant, id)
        .await?
        .ok_or(Error::NotFound("message"))?)
}

/// A message with the state of its delivery to each endpoint it fans out to.
#[utoipa::path(
    get,
    path = "/v1/messages/{id}",
    tag = "messages",
    operation_id = "get_message",
    params(("id" = String, Path, description = "Message id (`msg_…`)")),
    responses(
        (status = 200, description = "The message and its deliveries", body = MessageDetail),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "Not one of the caller's messages", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let message = load(&state, caller, &id).await?;
    let mut recorded: HashMap<_, Delivery> = state
        .store
        .list_deliveries(message.id)
        .await?
        .into_iter()
        .map(|d| (d.endpoint, d))
        .collect();
    let deliveries: Vec<DeliveryView> = message
        .targets
        .iter()
        .map(|ep| {
            let d = recorded.remove(ep).unwrap_or_else(|| {
                Delivery::fresh(message.id, *ep, message.tenant, message.received_at)
            });
            DeliveryView::from(&d)
        })
        .collect();
    let mut body = serde_json::to_value(MessageView::from(&message)).expect("view serializes");
    body["deliveries"] = json!(deliveries);
    Ok(Json(body))
}

#[utoipa::path(
    get,
    path = "/v1/messages/{id}/attempts",
    tag = "messages",
    operation_id = "list_attempts",
    params(("id" = String, Path, description = "Message id (`msg_…`)")),
    responses(
        (status = 200, description = "Every attempt of the message, to every endpoint", body = AttemptList),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "Not one of the caller's messages", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn attempts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let message = load(&state, caller, &id).await?;
    let attempts = state
        .store
        .list_attempts(message.tenant, message.id)
        .await?;
    let data: Vec<AttemptView> = attempts.iter().map(AttemptView::from).collect();
    Ok(Json(json!({ "data": data })))
}
