//! Manual replay: sending failed deliveries again, all those of an endpoint since a time
//! or those of one message. A replay reopens the delivery (pending again, conditional on
//! its attempt count, so two replays at once send it once) and queues an attempt task; the
//! attempt continues the delivery's numbering and shows in the log like any other. A
//! failed replayed attempt is retried on the rest of the schedule, if any is left.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hookline_core::envelope::json_or_default;
use hookline_core::http::{ApiResult, AppState, Caller, ErrorBody, RawBody};
use hookline_core::ids::{EndpointId, MessageId, TenantId};
use hookline_core::model::{Delivery, DeliveryStatus, EndpointStatus, FailedQuery, Millis};
use hookline_core::ports::Outgoing;
use hookline_core::task::{AttemptTask, Task};
use hookline_core::Error;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Deliveries read per page of a bulk replay.
const PAGE: usize = 100;
/// The most deliveries one bulk replay request reopens; the answer says when more are
/// left (calling again picks them up, as those replayed are no longer failed).
pub const MAX_REPLAY: usize = 1000;

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"since": "2024-05-01T00:00:00Z"}))]
pub struct ReplayEndpoint {
    /// RFC 3339: replay messages received at or after this time. Required.
    #[serde(default)]
    #[schema(value_type = String, format = DateTime)]
    since: Option<Value>,
    /// RFC 3339: and before this time; up to now when absent.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    until: Option<Value>,
}

/// The answer to an endpoint replay.
#[derive(Serialize, ToSchema)]
pub struct EndpointReplayed {
    /// Deliveries reopened and queued.
    pub queued: usize,
    /// False when the request stopped at its cap with more failed deliveries left; call
    /// again to replay them.
    pub complete: bool,
}

/// A delivery a message replay left alone.
#[derive(Serialize, ToSchema)]
pub struct SkippedDelivery {
    #[schema(value_type = String)]
    pub endpoint_id: EndpointId,
    /// `endpoint_disabled`: the endpoint is disabled or deleted.
    pub reason: &'static str,
}

/// The answer to a message replay.
#[derive(Serialize, ToSchema)]
pub struct MessageReplayed {
    /// Deliveries reopened and queued.
    pub queued: usize,
    pub skipped: Vec<SkippedDelivery>,
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"endpoint_id": "ep_01JQ8C9HT5N6R0D4X5W1V2Z3YK"}))]
pub struct ReplayMessage {
    /// Only the delivery to this endpoint; every failed one when absent.
    #[serde(default)]
    endpoint_id: Option<String>,
}

fn time(field: &str, value: Option<&Value>) -> Result<Option<Millis>, Error> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    value
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| Some(t.timestamp_millis()))
        .ok_or_else(|| {
            Error::unprocessable(
                "invalid_time",
                format!("{field} must be an RFC 3339 time, e.g. 2024-05-01T00:00:00Z"),
            )
        })
}

fn conflict_disabled() -> Error {
    Error::conflict(
        "endpoint_disabled",
        "the endpoint is disabled; re-enable it with PATCH {\"status\": \"active\"} first",
    )
}

/// Replays every failed delivery to the endpoint of a message received in `[since,
/// until)`, oldest first, up to 1000 per request.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/replay",
    tag = "endpoints",
    operation_id = "replay_endpoint",
    params(("id" = String, Path, description = "Endpoint id (`ep_…`)")),
    request_body = ReplayEndpoint,
    responses(
        (status = 202, description = "The deliveries queued again", body = EndpointReplayed),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "Not one of the caller's endpoints", body = ErrorBody),
        (status = 409, description = "The endpoint is disabled: re-enable it first", body = ErrorBody),
        (status = 422, description = "`since` missing or not RFC 3339, or `until` not after it", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawBody(raw): RawBody,
) -> ApiResult<(StatusCode, Json<EndpointReplayed>)> {
    let tenant = caller.tenant()?;
    let id = EndpointId::parse(&id).ok_or(Error::NotFound("endpoint"))?;
    let endpoint = state
        .store
        .get_endpoint(tenant, id)
        .await?
        .ok_or(Error::NotFound("endpoint"))?;
    let req: ReplayEndpoint = json_or_default(&raw)?;
    let since = time("since", req.since.as_ref())?
        .ok_or_else(|| Error::unprocessable("invalid_time", "since is required"))?;
    let until = time("until", req.until.as_ref())?;
    if until.is_some_and(|u| u <= since) {
        return Err(Error::unprocessable("invalid_time", "until must be later than since").into());
    }
    if endpoint.status != EndpointStatus::Active {
        return Err(conflict_disabled().into());
    }
    let mut query = FailedQuery {
        since,
        until,
        after: None,
        limit: PAGE,
    };
    let mut queued = 0;
    let complete = loop {
        if queued >= MAX_REPLAY {
            break false;
        }
        query.limit = PAGE.min(MAX_REPLAY - queued);
        let page = state
            .store
            .list_failed_deliveries(tenant, endpoint.id, &query)
            .await?;
        let Some(last) = page.last() else {
            break true;
        };
        query.after = Some(last.message);
        let full = page.len() == query.limit;
        queued += reopen(&state, page).await?;
        if !full {
            break true;
        }
    };
    tracing::info!(%tenant, endpoint = %endpoint.id, queued, complete, "endpoint replay");
    Ok((
        StatusCode::ACCEPTED,
        Json(EndpointReplayed { queued, complete }),
    ))
}

/// Replays a message's failed deliveries, or with `endpoint_id` its delivery to that
/// endpoint (which must have failed). Deliveries that succeeded or are pending are left
/// alone; those to disabled or deleted endpoints are skipped and listed.
#[utoipa::path(
    post,
    path = "/v1/messages/{id}/replay",
    tag = "messages",
    operation_id = "replay_message",
    params(("id" = String, Path, description = "Message id (`msg_…`)")),
    request_body = Option<ReplayMessage>,
    responses(
        (status = 202, description = "The deliveries queued again", body = MessageReplayed),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "Not one of the caller's messages, or not a target of it", body = ErrorBody),
        (status = 409, description = "That delivery has not failed, or its endpoint is disabled", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn message(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawBody(raw): RawBody,
) -> ApiResult<(StatusCode, Json<MessageReplayed>)> {
    let tenant = caller.tenant()?;
    let id = MessageId::parse(&id).ok_or(Error::NotFound("message"))?;
    let message = state
        .store
        .get_message(tenant, id)
        .await?
        .ok_or(Error::NotFound("message"))?;
    let req: ReplayMessage = json_or_default(&raw)?;
    let only = match req.endpoint_id.as_deref() {
        None => None,
        Some(s) => Some(
            EndpointId::parse(s)
                .filter(|ep| message.targets.contains(ep))
                .ok_or(Error::NotFound("endpoint"))?,
        ),
    };
    let deliveries = state.store.list_deliveries(message.id).await?;
    if let Some(ep) = only {
        let failed = deliveries
            .iter()
            .any(|d| d.endpoint == ep && d.status == DeliveryStatus::Failed);
        if !failed {
            return Err(Error::conflict(
                "delivery_not_failed",
                "only a failed delivery can be replayed; this one is pending or succeeded",
            )
            .into());
        }
        if !endpoint_active(&state, tenant, ep).await? {
            return Err(conflict_disabled().into());
        }
    }
    let mut chosen = Vec::new();
    let mut skipped = Vec::new();
    for d in deliveries {
        if d.status != DeliveryStatus::Failed || only.is_some_and(|ep| ep != d.endpoint) {
            continue;
        }
        if endpoint_active(&state, tenant, d.endpoint).await? {
            chosen.push(d);
        } else {
            skipped.push(SkippedDelivery {
                endpoint_id: d.endpoint,
                reason: "endpoint_disabled",
            });
        }
    }
    let queued = reopen(&state, chosen).await?;
    tracing::info!(%tenant, message = %message.id, queued, "message replay");
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageReplayed { queued, skipped }),
    ))
}

async fn endpoint_active(state: &AppState, tenant: TenantId, id: EndpointId) -> ApiResult<bool> {
    Ok(state
        .store
        .get_endpoint(tenant, id)
        .await?
        .is_some_and(|e| e.status == EndpointStatus::Active))
}

/// Reopens each failed delivery and queues its next attempt; returns how many it queued.
/// One another replay reopened first is left to it. The deliveries whose tasks the queue
/// did not take are put back to failed, so a later replay finds them again (and only
/// them: the others are on their way), and the replay fails.
async fn reopen(state: &AppState, deliveries: Vec<Delivery>) -> ApiResult<usize> {
    let now = state.clock.now();
    let mut reopened = Vec::new();
    for d in deliveries {
        if state
            .store
            .reopen_delivery(d.message, d.endpoint, d.attempts, now)
            .await?
        {
            reopened.push(d);
        }
    }
    if reopened.is_empty() {
        return Ok(0);
    }
    let tasks = reopened
        .iter()
        .map(|d| Outgoing {
            body: Task::Attempt(AttemptTask::new(
                d.message, d.endpoint, d.tenant, d.attempts, now,
            ))
            .to_body(),
            delay: std::time::Duration::ZERO,
        })
        .collect();
    if let Err(e) = state.queue.send(tasks).await {
        for unqueued in &e.unqueued {
            let d = &reopened[unqueued.index];
            if let Err(undo) = state.store.record_attempt(d, d.attempts, None).await {
                tracing::error!(message = %d.message, endpoint = %d.endpoint, error = %undo, "replayed delivery left pending");
            }
        }
        return Err(Error::from(e).into());
    }
    Ok(reopened.len())
}
