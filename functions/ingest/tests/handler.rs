//! The ingest function's handler fed real API Gateway HTTP API (payload v2) events, against
//! DynamoDB and SQS on moto: validated events land on the queue, batches in
//! `SendMessageBatch` chunks, idempotency keys bound in DynamoDB, bad input refused with
//! nothing queued.

use std::sync::Arc;

use axum::body::Body;
use hookline_core::aws::testing::{moto_sdk_config, unique};
use hookline_core::aws::{create_queue_pair, create_table, DynamoStore, SqsQueue};
use hookline_core::config::CoreConfig;
use hookline_core::contract::stored_tenant;
use hookline_core::http::{with_fallbacks, AppState};
use hookline_core::ids::{MessageId, TenantId};
use hookline_core::ports::SystemClock;
use hookline_core::task::{Origin, Task};
use serde_json::Value;
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
    let sdk = moto_sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let table = unique("hookline-ingest");
    create_table(&ddb, &table).await.unwrap();
    let (queue_url, _) = create_queue_pair(&sqs, &unique("hookline-ingest"))
        .await
        .unwrap();
    let store = Arc::new(DynamoStore::new(ddb, table));
    let (tenant, key) = stored_tenant(store.as_ref(), None).await;
    let state = AppState {
        store,
        queue: Arc::new(SqsQueue::new(sqs.clone(), queue_url.clone())),
        clock: Arc::new(SystemClock),
        config: Arc::new(CoreConfig::default()),
        operator_key: None,
        sender: None,
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
        .map(|t| match t {
            Task::Event(e) => e.id.to_string(),
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
