//! Ingestion: `POST /v1/events`. Validates every envelope, binds idempotency keys, and puts
//! the events on the queue; answers 202 once they are queued. Nothing is queued when any
//! event of a request is invalid. An event may name an owner (the publisher or one of its
//! sub-accounts): it is then the owner's event, queued with its publisher beside it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Json, Router};
use hookline_core::envelope::{Publish, Validated};
use hookline_core::http::{ApiResult, AppState, Caller, ErrorBody, RawBody};
use hookline_core::ids::MessageId;
use hookline_core::ports::Outgoing;
use hookline_core::task::{EventTask, Task};
use hookline_core::{Error, Result};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The ingest routes, ready to be merged into the local router or served alone on Lambda.
pub fn router(state: AppState) -> Router {
    let (router, _) = routes().split_for_parts();
    router.with_state(state)
}

/// The ingest routes with their documentation, registered from their annotations (the
/// api crate merges the documentation into the one OpenAPI document).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(publish))
}

/// One event to publish.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "type": "delivered",
    "domain": null,
    "idempotency_key": "evt-1",
    "payload": {"event": "delivered", "recipient": "alice@example.com"}
}))]
pub struct PublishEvent {
    /// A type of the catalog (`GET /v1/event-types`).
    #[serde(rename = "type")]
    pub event_type: String,
    /// A JSON object, kept byte for byte; at most 256 KiB.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// One of the owner's registered domains.
    #[serde(default)]
    pub domain: Option<String>,
    /// The same key within 24 hours gives back the first message's id.
    #[serde(default)]
    #[schema(max_length = 256)]
    pub idempotency_key: Option<String>,
    /// The caller or one of its sub-accounts (`tn_…`), whose event this is.
    #[serde(default)]
    pub owner: Option<String>,
}

/// Up to 100 events; none is queued when one is invalid.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBatch {
    #[schema(min_items = 1, max_items = 100)]
    pub events: Vec<PublishEvent>,
}

/// One event, or a batch.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum PublishRequest {
    One(PublishEvent),
    Many(PublishBatch),
}

/// The id of the message of a single event.
#[derive(Serialize, ToSchema)]
pub struct AcceptedOne {
    #[schema(example = "msg_01JQ8C9HT5N6R0D4X5W1V2Z3YK")]
    pub id: String,
}

/// The ids of the messages of a batch, in order.
#[derive(Serialize, ToSchema)]
pub struct AcceptedMany {
    pub ids: Vec<String>,
}

/// What a publish answers: `id` for one event, `ids` for a batch.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Accepted {
    One(AcceptedOne),
    Many(AcceptedMany),
}

#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    operation_id = "publish_events",
    request_body = PublishRequest,
    responses(
        (status = 202, description = "Queued: the message id(s)", body = Accepted),
        (status = 400, description = "Invalid body, event type, domain or payload", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "`owner` is neither the caller nor one of its sub-accounts", body = ErrorBody),
        (status = 413, description = "Body or payload too large", body = ErrorBody),
        (status = 503, description = "Too many events wait for delivery (local mode, `HOOKLINE_MAX_WAITING`): nothing was queued; retry after the `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before publishing again"))),
    ),
    security(("tenant_key" = []))
)]
async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    RawBody(body): RawBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let tenant = caller.tenant()?;
    if let Some(retry_after) = state.queue.push_back() {
        return Err(Error::Overloaded { retry_after }.into());
    }
    let publish = Publish::parse(&body)?;
    let single = matches!(publish, Publish::One(_));
    let mut events = Vec::new();
    for (i, event) in publish.into_events().into_iter().enumerate() {
        let valid = event
            .validate(tenant, &state.config, state.store.as_ref())
            .await
            .map_err(|e| if single { e } else { at_index(i, e) })?;
        events.push(valid);
    }
    let ids = accept(&state, events).await?;
    let body = if single {
        json!({ "id": ids[0] })
    } else {
        json!({ "ids": ids })
    };
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// Queues validated events and returns their message ids, in order.
///
/// Idempotency keys are the publisher's: a key binds once per publisher, whichever tenant
/// owns the event. An event whose key is already bound gets the bound id back. If that
/// message is not stored yet (still queued, or the first request died between binding the
/// key and queueing), it is queued again under the same id; the worker stores a message
/// once and settles each delivery once, so the repeat cannot be delivered twice.
pub async fn accept(state: &AppState, events: Vec<Validated>) -> Result<Vec<MessageId>> {
    let now = state.clock.now();
    let mut ids = Vec::with_capacity(events.len());
    let mut outgoing = Vec::with_capacity(events.len());
    for valid in events {
        let (event, route) = valid.into_parts();
        let mut id = MessageId::new();
        if let Some(key) = &event.idempotency_key {
            let bound = state
                .store
                .claim_idempotency_key(route.publisher, key, id, now, state.config.idempotency_ttl)
                .await?;
            if let Some(first) = bound {
                id = first;
                if state
                    .store
                    .get_message(route.tenant, first)
                    .await?
                    .is_some()
                {
                    ids.push(first);
                    continue;
                }
            }
        }
        let task = EventTask::new(
            id,
            route.publisher,
            event.event_type,
            event.payload,
            event.domain,
            event.idempotency_key,
            now,
            true,
        )
        .with_owner(route.owner());
        outgoing.push(Outgoing {
            body: Task::Event(task).to_body(),
            delay: std::time::Duration::ZERO,
        });
        ids.push(id);
    }
    if !outgoing.is_empty() {
        state.queue.send(outgoing).await?;
    }
    Ok(ids)
}

fn at_index(i: usize, e: Error) -> Error {
    match e {
        Error::Invalid { code, message } => Error::Invalid {
            code,
            message: format!("events[{i}]: {message}"),
        },
        Error::TooLarge(message) => Error::TooLarge(format!("events[{i}]: {message}")),
        other => other,
    }
}
