//! The ingest function's handler fed real API Gateway HTTP API (payload v2) events, against
//! DynamoDB and SQS on moto: validated events land on the queue, batches in
//! `SendMessageBatch` chunks cut by count and size, idempotency keys bound in DynamoDB, bad
//! input refused with nothing queued, and a publish the queue takes only in part answered
//! with the fate of each event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use hookline_core::aws::testing::{moto_sdk_config, unique};
use hookline_core::aws::{create_queue_pair, create_table, DynamoStore, SqsQueue};
use hookline_core::config::CoreConfig;
use hookline_core::contract::stored_tenant;
use hookline_core::http::{with_fallbacks, AppState};
use hookline_core::ids::{MessageId, TenantId};
use hookline_core::ports::{
    NotQueued, Outgoing, Queue, Refusal, SharedQueue, SystemClock, Unqueued,
};
use hookline_core::task::{Origin, Task};
use serde_json::{json, Value};
use tower::ServiceExt;

fn event(name: &str, vars: &[(&str, &str)]) -> lambda_http::Request {
    let path = format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (k, v) in vars {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    lambda_http::request::from_str(&text).expect("a valid API Gateway v2 event")
}

struct Setup {
    app: axum::Router,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    key: String,
    tenant: TenantId,
}

async fn setup() -> Setup {
    setup_with(None, |q| Arc::new(q)).await
}

/// The ingest app on a fresh table and queue; `max_message_size` sets the queue's
/// `MaximumMessageSize`, and `wrap` puts the queue behind another [`Queue`].
async fn setup_with(
    max_message_size: Option<usize>,
    wrap: impl FnOnce(SqsQueue) -> SharedQueue,
) -> Setup {
    let sdk = moto_sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let table = unique("hookline-ingest");
    create_table(&ddb, &table).await.unwrap();
    let (queue_url, _) = create_queue_pair(&sqs, &unique("hookline-ingest"))
        .await
        .unwrap();
    if let Some(size) = max_message_size {
        sqs.set_queue_attributes()
            .queue_url(&queue_url)
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize,
                size.to_string(),
            )
            .send()
            .await
            .unwrap();
    }
    let store = Arc::new(DynamoStore::new(ddb, table));
    let (tenant, key) = stored_tenant(store.as_ref(), None).await;
    let state = AppState {
        store,
        queue: wrap(SqsQueue::new(sqs.clone(), queue_url.clone())),
        clock: Arc::new(SystemClock),
        config: Arc::new(CoreConfig::default()),
        operator_key: None,
        sender: None,
        dead_letters: None,
    };
    Setup {
        app: with_fallbacks(hookline_ingest::router(state)),
        sqs,
        queue_url,
        key: key.expose().to_string(),
        tenant,
    }
}

async fn send(app: &axum::Router, req: lambda_http::Request) -> (u16, Value) {
    let (parts, body) = req.into_parts();
    let req = http::Request::from_parts(parts, Body::from(body.to_vec()));
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// Everything on the queue now, parsed as tasks.
async fn drain(s: &Setup) -> Vec<Task> {
    let mut tasks = Vec::new();
    loop {
        let got = s
            .sqs
            .receive_message()
            .queue_url(&s.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            return tasks;
        }
        for m in messages {
            let origin = Origin {
                message_id: MessageId::new(),
                received_at: 0,
            };
            tasks.push(Task::parse(m.body.as_deref().unwrap(), origin).unwrap());
            s.sqs
                .delete_message()
                .queue_url(&s.queue_url)
                .receipt_handle(m.receipt_handle.unwrap())
                .send()
                .await
                .unwrap();
        }
    }
}

fn event_ids(tasks: &[Task]) -> Vec<String> {
    tasks
        .iter()
        .flat_map(|t| match t {
            Task::Event(e) => vec![e.id.to_string()],
            Task::Page(p) => p.events.iter().map(|e| e.id.to_string()).collect(),
            Task::Attempt(_) => panic!("ingest queues only events"),
        })
        .collect()
}

#[tokio::test]
async fn published_events_are_queued_once_validated() {
    let s = setup().await;
    let vars = [("API_KEY", s.key.as_str()), ("IDEMPOTENCY_KEY", "send-1")];
    let (status, body) = send(&s.app, event("apigw-v2-publish.json", &vars)).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let tasks = drain(&s).await;
    assert_eq!(event_ids(&tasks), vec![id.clone()]);
    let Task::Event(task) = &tasks[0] else {
        unreachable!()
    };
    assert_eq!(task.tenant, s.tenant);
    assert_eq!(task.event_type, "delivered");
    assert_eq!(
        task.payload.get(),
        r#"{"event": "delivered", "recipient": "alice@example.com"}"#
    );
    assert!(task.key_claimed);

    // The same key again: the first id, queued again under it (the message is not stored
    // until the worker sees it), so the worker's once-per-id rule is what stops a repeat.
    let (status, again) = send(&s.app, event("apigw-v2-publish.json", &vars)).await;
    assert_eq!(status, 202);
    assert_eq!(again["id"], id.as_str());
    assert_eq!(event_ids(&drain(&s).await), vec![id]);

    // Twelve events: two SendMessageBatch calls, every id on the queue.
    let (status, batch) = send(
        &s.app,
        event("apigw-v2-publish-batch.json", &[("API_KEY", &s.key)]),
    )
    .await;
    assert_eq!(status, 202, "{batch}");
    let mut ids: Vec<String> = batch["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 12);
    let mut queued = event_ids(&drain(&s).await);
    ids.sort();
    queued.sort();
    assert_eq!(queued, ids);
}

#[tokio::test]
async fn bad_events_are_refused_and_nothing_is_queued() {
    let s = setup().await;
    let (status, body) = send(
        &s.app,
        event("apigw-v2-publish-bad.json", &[("API_KEY", &s.key)]),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_request");
    let (status, body) = send(
        &s.app,
        event(
            "apigw-v2-publish.json",
            &[("API_KEY", "hk_unknown"), ("IDEMPOTENCY_KEY", "k")],
        ),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(drain(&s).await.is_empty());
}

/// A publish of `body` (a JSON value) as API Gateway hands it over.
fn publish_event(key: &str, body: &Value) -> lambda_http::Request {
    let path = format!(
        "{}/../../tests/fixtures/apigw-v2-publish.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["headers"]["authorization"] = json!(format!("Bearer {key}"));
    event["body"] = json!(body.to_string());
    lambda_http::request::from_str(&event.to_string()).expect("a valid API Gateway v2 event")
}

/// An event whose payload is about `size` bytes.
fn sized_event(n: usize, size: usize, key: Option<&str>) -> Value {
    let mut event = json!({
        "type": "opened",
        "payload": {"n": n, "fill": "x".repeat(size)},
    });
    if let Some(key) = key {
        event["idempotency_key"] = json!(key);
    }
    event
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

fn ids_in(body: &Value) -> Vec<String> {
    body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn ten_events_of_200_kib_are_queued_by_one_publish() {
    let s = setup().await;
    // 2 MB in all: over SQS's 1 MiB per SendMessageBatch, so the batches are cut by size.
    let events: Vec<Value> = (0..10).map(|n| sized_event(n, 200 * 1024, None)).collect();
    let (status, body) = send(&s.app, publish_event(&s.key, &json!({ "events": events }))).await;
    assert_eq!(status, 202, "{}", body["error"]);
    let ids = ids_in(&body);
    assert_eq!(ids.len(), 10);
    let tasks = drain(&s).await;
    assert_eq!(sorted(event_ids(&tasks)), sorted(ids));
    for task in &tasks {
        let Task::Event(task) = task else {
            unreachable!()
        };
        assert!(
            task.payload.get().len() > 200 * 1024,
            "the payload arrives whole"
        );
    }
}

#[tokio::test]
async fn a_batch_is_queued_as_pages_of_ten_and_keyed_events_alone() {
    let s = setup().await;
    let mut events: Vec<Value> = (0..23).map(|n| sized_event(n, 100, None)).collect();
    events.push(sized_event(23, 100, Some("page-key")));
    let (status, body) = send(&s.app, publish_event(&s.key, &json!({ "events": events }))).await;
    assert_eq!(status, 202, "{}", body["error"]);
    let ids = ids_in(&body);
    assert_eq!(ids.len(), 24);
    let tasks = drain(&s).await;
    assert_eq!(sorted(event_ids(&tasks)), sorted(ids.clone()));
    let mut sizes: Vec<usize> = Vec::new();
    for task in &tasks {
        match task {
            Task::Page(page) => {
                sizes.push(page.events.len());
                // A page's ids are consecutive from its first and name it; its events
                // are the publish's, in order.
                let base = page.events[0].id;
                for (i, event) in page.events.iter().enumerate() {
                    assert_eq!(event.id.page_base(), base);
                    assert_eq!(event.id.page_index(), i);
                    assert!(event.idempotency_key.is_none());
                    let at = ids
                        .iter()
                        .position(|id| *id == event.id.to_string())
                        .unwrap();
                    assert_eq!(
                        event.payload.get(),
                        sized_event(at, 100, None)["payload"].to_string()
                    );
                }
            }
            Task::Event(event) => {
                sizes.push(1);
                assert_eq!(event.idempotency_key.as_deref(), Some("page-key"));
                assert_eq!(event.id.to_string(), ids[23]);
            }
            Task::Attempt(_) => panic!("ingest queues only events"),
        }
    }
    sizes.sort();
    assert_eq!(sizes, vec![1, 3, 10, 10]);
}

/// The fates the answer gives, as (queued, id, code) per event.
fn fates_in(body: &Value) -> Vec<(bool, Option<String>, Option<String>)> {
    body["events"]
        .as_array()
        .expect("`events` in a not_queued answer")
        .iter()
        .enumerate()
        .map(|(i, e)| {
            assert_eq!(e["index"], i, "in request order");
            (
                e["queued"].as_bool().unwrap(),
                e["id"].as_str().map(String::from),
                e["code"].as_str().map(String::from),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_event_the_queue_refuses_is_named_and_the_others_are_queued() {
    // A queue that takes messages of at most 2 KiB.
    let s = setup_with(Some(2048), |q| Arc::new(q)).await;
    let events = json!({"events": [
        sized_event(0, 100, Some("small-0")),
        sized_event(1, 4000, Some("big-1")),
        sized_event(2, 100, None),
    ]});
    let (status, body) = send(&s.app, publish_event(&s.key, &events)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "not_queued");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("1 of 3 events"));
    let fates = fates_in(&body);
    assert!(fates[0].0 && fates[2].0, "{body}");
    assert_eq!(fates[0].2, None);
    let (queued, bound, code) = &fates[1];
    assert!(!queued);
    assert_eq!(code.as_deref(), Some("queue_refused"));
    assert!(
        bound.is_some(),
        "the key of the refused event is bound to an id"
    );
    assert!(body["events"][1]["message"].as_str().is_some());
    let queued_ids = vec![fates[0].1.clone().unwrap(), fates[2].1.clone().unwrap()];
    assert_eq!(sorted(event_ids(&drain(&s).await)), sorted(queued_ids));
}

/// An [`SqsQueue`] whose next send leaves off the messages at the given positions, as if
/// SQS had not answered for them; every other send goes through.
struct Flaky {
    inner: SqsQueue,
    drop_next: Mutex<Vec<usize>>,
}

#[async_trait]
impl Queue for Flaky {
    async fn send(&self, messages: Vec<Outgoing>) -> Result<(), NotQueued> {
        let drop = std::mem::take(&mut *self.drop_next.lock().unwrap());
        let sent = messages.len();
        let kept = messages
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !drop.contains(i))
            .map(|(_, m)| m)
            .collect();
        self.inner.send(kept).await.expect("moto takes the rest");
        if drop.is_empty() {
            return Ok(());
        }
        Err(NotQueued {
            sent,
            unqueued: drop
                .into_iter()
                .map(|index| Unqueued {
                    index,
                    refusal: Refusal::Unavailable,
                    detail: "no answer".into(),
                })
                .collect(),
        })
    }

    fn max_delay(&self) -> Duration {
        self.inner.max_delay()
    }

    async fn probe(&self) -> hookline_core::Result<()> {
        self.inner.probe().await
    }
}

#[tokio::test]
async fn events_left_off_are_queued_by_publishing_them_again_with_their_keys() {
    let s = setup_with(None, |inner| {
        Arc::new(Flaky {
            inner,
            drop_next: Mutex::new(vec![1, 3]),
        })
    })
    .await;
    let events = [
        sized_event(0, 10, Some("k-0")),
        sized_event(1, 10, Some("k-1")),
        sized_event(2, 10, Some("k-2")),
        sized_event(3, 10, None),
    ];
    let (status, body) = send(
        &s.app,
        publish_event(&s.key, &json!({ "events": events.to_vec() })),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "not_queued");
    let fates = fates_in(&body);
    let queued: Vec<bool> = fates.iter().map(|f| f.0).collect();
    assert_eq!(queued, vec![true, false, true, false]);
    assert_eq!(fates[1].2.as_deref(), Some("queue_unavailable"));
    assert_eq!(fates[3].2.as_deref(), Some("queue_unavailable"));
    let bound_to = fates[1].1.clone().expect("k-1 is bound to an id");
    assert_eq!(
        fates[3].1, None,
        "without a key the id is gone with the event"
    );
    let first_ids = vec![fates[0].1.clone().unwrap(), fates[2].1.clone().unwrap()];
    assert_eq!(sorted(event_ids(&drain(&s).await)), sorted(first_ids));

    // Publishing again the two events left off queues them; k-1 keeps its id.
    let (status, again) = send(
        &s.app,
        publish_event(
            &s.key,
            &json!({"events": [events[1].clone(), events[3].clone()]}),
        ),
    )
    .await;
    assert_eq!(status, 202, "{again}");
    let ids = ids_in(&again);
    assert_eq!(ids[0], bound_to);
    assert_eq!(sorted(event_ids(&drain(&s).await)), sorted(ids));

    // A single event left off gets the same shape of answer.
    let s = setup_with(None, |inner| {
        Arc::new(Flaky {
            inner,
            drop_next: Mutex::new(vec![0]),
        })
    })
    .await;
    let (status, body) = send(&s.app, publish_event(&s.key, &sized_event(9, 10, None))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        fates_in(&body),
        vec![(false, None, Some("queue_unavailable".into()))]
    );
    assert!(drain(&s).await.is_empty());
}
