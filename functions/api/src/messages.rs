//! The message log: messages, their per-endpoint delivery state and attempts.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use hookline_core::http::{page_body, parse_limit, ApiResult, AppState, Caller, ErrorBody, Paging};
use hookline_core::ids::{AttemptId, MessageId};
use hookline_core::model::{Delivery, Message, MessageQuery};
use hookline_core::Error;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;

use crate::openapi::{AttemptList, MessageDetail, MessageList};
use crate::views::{AttemptView, DeliveryView, MessageView};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
    /// Page size, 1 to 250 (default 50); a page also stops before 2 MiB of messages.
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
    let limit = parse_limit(q.limit.as_deref())?;
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
    let views: Vec<MessageView> = page.items.iter().map(MessageView::from).collect();
    Ok(Json(page_body(&views, page.next_cursor, |m| {
        m.id.to_string()
    })))
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
    params(("id" = String, Path, description = "Message id (`msg_…`)"), Paging),
    responses(
        (status = 200, description = "A page of the attempts of the message, to every endpoint, oldest first", body = AttemptList),
        (status = 400, description = "Invalid query or cursor", body = ErrorBody),
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
    query: Result<Query<Paging>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let page = crate::endpoints::paging(query)?.query()?;
    let message = load(&state, caller, &id).await?;
    // A message's attempts are bounded by its targets times the retry schedule, and read
    // in one go; the page is cut from them.
    let attempts = state
        .store
        .list_attempts(message.tenant, message.id)
        .await?;
    let start = match page.after.as_deref() {
        None => 0,
        Some(cursor) => {
            let after = AttemptId::parse(cursor)
                .ok_or_else(|| Error::invalid("invalid_cursor", "cursor is not one we issued"))?;
            attempts
                .iter()
                .position(|a| a.id == after)
                .map(|i| i + 1)
                .ok_or_else(|| Error::invalid("invalid_cursor", "cursor is not one we issued"))?
        }
    };
    let rest = &attempts[start..];
    let shown = &rest[..rest.len().min(page.limit)];
    let next_cursor = (rest.len() > shown.len())
        .then(|| shown.last().map(|a| a.id.to_string()))
        .flatten();
    let views: Vec<AttemptView> = shown.iter().map(AttemptView::from).collect();
    Ok(Json(page_body(&views, next_cursor, |a| a.id.to_string())))
}
