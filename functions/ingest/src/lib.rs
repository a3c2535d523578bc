//! Ingestion: `POST /v1/events`. Validates every envelope, binds idempotency keys, and puts
//! the events on the queue; answers 202 once they are all queued, or 503 naming the events
//! that were queued and those that were not, and why. Nothing is queued when any event of
//! a request is invalid. An event may name an owner (the publisher or one of its
//! sub-accounts): it is then the owner's event, queued with its publisher beside it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hookline_core::envelope::{Publish, Validated};
use hookline_core::http::{ApiResult, AppState, Caller, ErrorBody, ErrorDetail, RawBody};
use hookline_core::ids::{MessageId, TenantId};
use hookline_core::metrics;
use hookline_core::ports::{NotQueued, Outgoing, Refusal, Sequenced};
use hookline_core::task::{EventTask, PageTask, Task};
use hookline_core::{Error, Result};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The ingest routes, ready to be merged into the local router or served alone on Lambda;
/// registered from the same annotations as `routes`, without building their documentation.
pub fn router(state: AppState) -> Router {
    hookline_core::route_documented!(Router::new(), publish).with_state(state)
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
    /// For endpoints with `"ordering": "strict"`: each key is its own sequence, delivered
    /// in the order accepted; without one, the owner's events form one sequence. 1 to 64
    /// letters, digits or `-_.:`.
    #[serde(default)]
    #[schema(max_length = 64, pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    pub ordering_key: Option<String>,
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

/// What became of one event of a publish that did not queue them all.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventFate {
    /// The event's position in the request (0 for a single event).
    pub index: usize,
    pub queued: bool,
    /// The message id: of the queued event, or of one not queued whose idempotency key is
    /// bound to it (published again with that key, the event is queued under this id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "msg_01JQ8C9HT5N6R0D4X5W1V2Z3YK")]
    pub id: Option<String>,
    /// Why it was not queued: `queue_unavailable` (publish it again) or `queue_refused`
    /// (the queue refuses the event as it is; publishing it unchanged fails again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "queue_unavailable")]
    pub code: Option<&'static str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<&'static str>,
}

/// A 503 answer: the error, and with `not_queued` the fate of every event of the request,
/// in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublishRefused {
    pub error: ErrorDetail,
    /// Only with `not_queued`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventFate>>,
}

/// What became of one event given to [`accept`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// On the queue under this id (or stored already, for an idempotency key bound before).
    Queued(MessageId),
    /// Not on the queue. `id`: the message id its idempotency key stays bound to, if it
    /// has one; the event published again with that key is queued under it (see
    /// [`accept`]).
    NotQueued {
        id: Option<MessageId>,
        refusal: Refusal,
    },
}

impl Fate {
    fn describe(&self, index: usize) -> EventFate {
        match self {
            Fate::Queued(id) => EventFate {
                index,
                queued: true,
                id: Some(id.to_string()),
                code: None,
                message: None,
            },
            Fate::NotQueued { id, refusal } => EventFate {
                index,
                queued: false,
                id: id.map(|id| id.to_string()),
                code: Some(refusal.code()),
                message: Some(match refusal {
                    Refusal::Unavailable => {
                        "the queue did not take the event; publish it again (with its \
                         idempotency key it keeps its message id)"
                    }
                    Refusal::Refused => {
                        "the queue refuses the event as it is (larger than the queue \
                         takes); publishing it again unchanged fails again"
                    }
                }),
            },
        }
    }
}

/// The answer to a publish of which some events, or all, were not queued.
fn not_queued(fates: &[Fate]) -> Response {
    let missing = fates
        .iter()
        .filter(|f| matches!(f, Fate::NotQueued { .. }))
        .count();
    let body = PublishRefused {
        error: ErrorDetail {
            code: "not_queued".to_owned(),
            message: format!(
                "{missing} of {} events were not queued; `events` tells which, publish \
                 those again",
                fates.len()
            ),
            receiver: None,
        },
        events: Some(
            fates
                .iter()
                .enumerate()
                .map(|(i, f)| f.describe(i))
                .collect(),
        ),
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
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
        (status = 422, description = "`reserved_event_type`: a type starting with `hookline.`, which only Hookline's operational events carry; nothing was queued", body = ErrorBody),
        (status = 503, description = "Not every event was queued. Code `not_queued`: the queue did not take some events (or any); `events` gives the fate of each, in order: `queued` with its `id`, or not with a `code` (`queue_unavailable`: publish it again; `queue_refused`: the queue refuses it as it is) and a `message`. Publish again only those not queued; with their idempotency keys they keep their ids, and a key bound to an event already queued never queues it twice. Code `overloaded`: too many events wait for delivery (local mode, `HOOKLINE_MAX_WAITING`); nothing was queued, retry after the `Retry-After` seconds", body = PublishRefused,
            headers(("Retry-After" = u64, description = "With `overloaded`: seconds to wait before publishing again"))),
    ),
    security(("tenant_key" = []))
)]
async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let answer = publish_body(&state, caller, &body).await;
    if let Err(refused) = &answer {
        // A request refused whole: its events, however many, count as one refusal.
        metrics::events_refused(refused.0.code(), 1);
    }
    answer
}

async fn publish_body(state: &AppState, caller: Caller, body: &[u8]) -> ApiResult<Response> {
    let tenant = caller.tenant()?;
    if let Some(retry_after) = state.queue.push_back() {
        return Err(Error::Overloaded { retry_after }.into());
    }
    let publish = Publish::parse(body)?;
    let single = matches!(publish, Publish::One(_));
    let mut events = Vec::new();
    for (i, event) in publish.into_events().into_iter().enumerate() {
        let valid = event
            .validate(tenant, &state.config, state.store.as_ref())
            .await
            .map_err(|e| if single { e } else { at_index(i, e) })?;
        events.push(valid);
    }
    let fates = accept(state, events).await?;
    record(&fates);
    let mut ids = Vec::with_capacity(fates.len());
    for fate in &fates {
        match fate {
            Fate::Queued(id) => ids.push(*id),
            Fate::NotQueued { .. } => return Ok(not_queued(&fates)),
        }
    }
    let body: Value = if single {
        json!({ "id": ids[0] })
    } else {
        json!({ "ids": ids })
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Counts the events of a publish that reached the queue and those it did not take.
fn record(fates: &[Fate]) {
    let queued = fates
        .iter()
        .filter(|f| matches!(f, Fate::Queued(_)))
        .count();
    if queued > 0 {
        metrics::events_accepted(metrics::Source::Http, queued);
    }
    for fate in fates {
        if let Fate::NotQueued { refusal, .. } = fate {
            metrics::events_refused(refusal.code(), 1);
        }
    }
}

/// Queues validated events and tells what became of each, in order.
///
/// Idempotency keys are the publisher's: a key binds once per publisher, whichever tenant
/// owns the event. An event whose key is already bound gets the bound id back. If that
/// message is not stored yet (still queued, or not queued: the first request died between
/// binding the key and queueing, or the queue did not take it), it is queued again under
/// the same id; the worker stores a message once and settles each delivery once, so the
/// repeat cannot be delivered twice. So a key stays bound to an event that was not queued,
/// and publishing the event again with it queues it under that id.
///
/// Fails, with nothing queued, when storage fails; the queue's answer is told per event.
pub async fn accept(state: &AppState, events: Vec<Validated>) -> Result<Vec<Fate>> {
    let now = state.clock.now();
    let mut fates = Vec::with_capacity(events.len());
    let mut outgoing = Vec::with_capacity(events.len());
    let mut sequenced = Vec::new();
    // The positions in `fates` of the events each message in `outgoing` (and in
    // `sequenced`) carries, and whether a key binds each.
    let mut sent_for: Vec<Vec<(usize, bool)>> = Vec::with_capacity(events.len());
    let mut sequenced_for = Vec::new();
    // Events that may share a page, with their position in `fates`; ids are given when
    // the pages are made.
    let mut pageable: Vec<(usize, EventTask)> = Vec::new();
    // Whether each owner has strictly ordered endpoints, asked once per publish.
    let mut ordered_owners: Vec<(TenantId, bool)> = Vec::new();
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
                    fates.push(Fate::Queued(first));
                    continue;
                }
            }
        }
        // A queue without an ordered side has no strict endpoints to sequence for (they
        // are refused), so it costs the publish nothing.
        let ordered = match ordered_owners.iter().find(|(t, _)| *t == route.tenant) {
            _ if !state.queue.keeps_order() => false,
            Some((_, ordered)) => *ordered,
            None => {
                let ordered = state.store.has_ordered_endpoints(route.tenant).await?;
                ordered_owners.push((route.tenant, ordered));
                ordered
            }
        };
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
        .with_owner(route.owner())
        .with_ordering(event.ordering_key, ordered);
        let keyed = task.idempotency_key.is_some();
        if ordered {
            // Sequenced as accepted: the fan-outs of the owner's events then run in this
            // order, and with them the deliveries to its ordered endpoints.
            sequenced.push(Sequenced {
                group: task.group(),
                dedup: id.to_string(),
                body: Task::Event(task).to_body(),
            });
            sequenced_for.push(vec![(fates.len(), keyed)]);
        } else if keyed {
            // A keyed event keeps the id its key binds, alone: published again before it
            // is stored, it is queued again under that id and must find it stored there.
            outgoing.push(Outgoing {
                body: Task::Event(task).to_body(),
                delay: std::time::Duration::ZERO,
            });
            sent_for.push(vec![(fates.len(), keyed)]);
        } else {
            pageable.push((fates.len(), task));
        }
        fates.push(Fate::Queued(id));
    }
    for page in pages(pageable) {
        let ids = if page.len() > 1 {
            MessageId::page(page.len())
        } else {
            vec![MessageId::new()]
        };
        let mut tasks = Vec::with_capacity(page.len());
        let mut carried = Vec::with_capacity(page.len());
        for ((at, mut task), id) in page.into_iter().zip(ids) {
            task.id = id;
            fates[at] = Fate::Queued(id);
            carried.push((at, false));
            tasks.push(task);
        }
        let body = match tasks.len() {
            1 => Task::Event(tasks.remove(0)).to_body(),
            _ => Task::Page(PageTask::new(tasks).map_err(|e| Error::backend("make page", e))?)
                .to_body(),
        };
        outgoing.push(Outgoing {
            body,
            delay: std::time::Duration::ZERO,
        });
        sent_for.push(carried);
    }
    if !outgoing.is_empty() {
        if let Err(not_queued) = state.queue.send(outgoing).await {
            tracing::error!(error = %not_queued, "publish not fully queued");
            mark_unqueued(&mut fates, &sent_for, &not_queued);
        }
    }
    if !sequenced.is_empty() {
        if let Err(not_queued) = state.queue.send_sequenced(sequenced).await {
            tracing::error!(error = %not_queued, "publish not fully queued in sequence");
            mark_unqueued(&mut fates, &sequenced_for, &not_queued);
        }
    }
    Ok(fates)
}

/// The most events one page carries: ten 1.5 KB events make a queue message of about
/// 16 KB and a stored page of 1–2 KB.
pub const PAGE_EVENTS: usize = 10;
/// The most payload bytes one page carries (an event larger than this goes alone): a
/// queue message stays well inside the queue's limit, and a page inside an item's.
pub const PAGE_BYTES: usize = 64 * 1024;

/// Splits events that may share pages into pages: each owner's, in order, at most
/// [`PAGE_EVENTS`] and [`PAGE_BYTES`] of payload a page. A page of one is sent alone.
fn pages(events: Vec<(usize, EventTask)>) -> Vec<Vec<(usize, EventTask)>> {
    // Per owner, the one page being filled: its payload bytes and events.
    type Filling = (TenantId, usize, Vec<(usize, EventTask)>);
    let mut open: Vec<Filling> = Vec::new();
    let mut done = Vec::new();
    for (at, task) in events {
        let owner = task.route().tenant;
        let size = task.payload.get().len();
        let i = match open.iter().position(|(o, _, _)| *o == owner) {
            // Too full for this event: done, and a new one begins.
            Some(i) if open[i].1 + size > PAGE_BYTES => {
                done.push(open.remove(i).2);
                None
            }
            found => found,
        };
        let i = i.unwrap_or_else(|| {
            open.push((owner, 0, Vec::new()));
            open.len() - 1
        });
        open[i].1 += size;
        open[i].2.push((at, task));
        if open[i].2.len() == PAGE_EVENTS {
            done.push(open.remove(i).2);
        }
    }
    done.extend(open.into_iter().map(|(_, _, page)| page));
    done
}

/// Marks the events a send left off the queue, by their message's position in it.
fn mark_unqueued(fates: &mut [Fate], sent_for: &[Vec<(usize, bool)>], not_queued: &NotQueued) {
    for unqueued in &not_queued.unqueued {
        for &(at, keyed) in &sent_for[unqueued.index] {
            if let Fate::Queued(id) = fates[at] {
                fates[at] = Fate::NotQueued {
                    id: keyed.then_some(id),
                    refusal: unqueued.refusal,
                };
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_keep_each_owners_events_in_order_within_the_count_and_size() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let task = |owner: TenantId, bytes: usize| {
            let payload = format!(r#""{}""#, "x".repeat(bytes - 2));
            let payload = serde_json::value::RawValue::from_string(payload).unwrap();
            EventTask::new(
                MessageId::new(),
                owner,
                "opened".into(),
                payload,
                None,
                None,
                1,
                true,
            )
        };
        // Owner a: 12 small events, then three of 30 KiB, then one larger than a page;
        // owner b's 12 small ones between a's.
        let mut events = Vec::new();
        for _ in 0..12 {
            events.push((events.len(), task(a, 100)));
            events.push((events.len(), task(b, 100)));
        }
        for _ in 0..3 {
            events.push((events.len(), task(a, 30 * 1024)));
        }
        events.push((events.len(), task(a, PAGE_BYTES + 1)));
        let owner_of: Vec<TenantId> = events.iter().map(|(_, t)| t.tenant).collect();
        let pages = pages(events);
        let mut shape: Vec<(TenantId, Vec<usize>)> = pages
            .iter()
            .map(|p| (owner_of[p[0].0], p.iter().map(|(at, _)| *at).collect()))
            .collect();
        shape.sort_by_key(|(_, ats)| ats[0]);
        let evens = |from: usize, n: usize| (0..n).map(|k| from + 2 * k).collect::<Vec<_>>();
        let want = vec![
            (a, evens(0, 10)),
            (b, evens(1, 10)),
            // Two of 30 KiB join the owner's last two small ones; the third would pass
            // PAGE_BYTES, and the largest goes alone.
            (a, vec![20, 22, 24, 25]),
            (b, vec![21, 23]),
            (a, vec![26]),
            (a, vec![27]),
        ];
        assert_eq!(shape, want);
        for page in &pages {
            let bytes: usize = page.iter().map(|(_, t)| t.payload.get().len()).sum();
            assert!(
                page.len() == 1 || bytes <= PAGE_BYTES,
                "{bytes} bytes in a page"
            );
        }
    }

    #[test]
    fn the_openapi_documents_each_events_fate_when_not_all_are_queued() {
        let doc = serde_json::to_value(routes().into_openapi()).unwrap();
        let refused = &doc["paths"]["/v1/events"]["post"]["responses"]["503"];
        assert!(refused["description"]
            .as_str()
            .unwrap()
            .contains("not_queued"));
        assert_eq!(
            refused["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/PublishRefused"
        );
        let schemas = &doc["components"]["schemas"];
        let body = &schemas["PublishRefused"];
        assert_eq!(body["required"], json!(["error"]), "{body}");
        assert!(body["properties"]["events"].is_object(), "{body}");
        let fate = &schemas["EventFate"];
        let mut required: Vec<&str> = fate["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        required.sort();
        assert_eq!(required, ["index", "queued"], "{fate}");
        for field in ["id", "code", "message"] {
            assert!(fate["properties"][field].is_object(), "{fate}");
        }
    }

    #[test]
    fn the_answer_names_every_event_and_keeps_the_error_shape() {
        let id = MessageId::new();
        let fates = [
            Fate::Queued(id),
            Fate::NotQueued {
                id: None,
                refusal: Refusal::Unavailable,
            },
            Fate::NotQueued {
                id: Some(id),
                refusal: Refusal::Refused,
            },
        ];
        let described: Vec<Value> = fates
            .iter()
            .enumerate()
            .map(|(i, f)| serde_json::to_value(f.describe(i)).unwrap())
            .collect();
        assert_eq!(
            described[0],
            json!({"index": 0, "queued": true, "id": id.to_string()})
        );
        assert_eq!(described[1]["code"], "queue_unavailable");
        assert!(described[1].get("id").is_none());
        assert_eq!(described[2]["code"], "queue_refused");
        assert_eq!(described[2]["id"], id.to_string());
        assert_eq!(not_queued(&fates).status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
