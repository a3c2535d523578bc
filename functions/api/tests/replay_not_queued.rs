//! A replay the queue takes only in part: the deliveries whose tasks were queued stay
//! reopened, the others go back to failed, the request fails, and replaying again sends
//! only what is still failed. On the embedded store, behind a queue that leaves off a
//! message on purpose.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use hookline_core::config::CoreConfig;
use hookline_core::contract::{endpoint_to, stored_tenant};
use hookline_core::embedded::SqliteQueue;
use hookline_core::http::{with_fallbacks, AppState};
use hookline_core::ids::MessageId;
use hookline_core::model::{Delivery, DeliveryStatus, Message};
use hookline_core::ports::{
    NotQueued, Outgoing, PullQueue, Queue, Refusal, SharedStore, SystemClock, Unqueued,
};
use hookline_core::task::{Origin, Task};
use serde_json::value::RawValue;
use serde_json::Value;
use tower::ServiceExt;

/// The embedded queue, but the next send leaves off the messages at the given positions.
struct Flaky {
    inner: Arc<SqliteQueue>,
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
        self.inner.send(kept).await?;
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

async fn post(app: &axum::Router, path: &str, key: &str) -> (u16, Value) {
    let req = http::Request::post(path)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn only_the_deliveries_whose_tasks_were_queued_stay_reopened() {
    let (store, queue) = hookline_core::embedded::open_in_memory().unwrap();
    let store: SharedStore = store;
    let flaky = Arc::new(Flaky {
        inner: queue.clone(),
        drop_next: Mutex::new(vec![1]),
    });
    let (tenant, key) = stored_tenant(store.as_ref(), None).await;
    let endpoints = [
        endpoint_to(tenant, "https://a.example/hook", None),
        endpoint_to(tenant, "https://b.example/hook", None),
    ];
    for e in &endpoints {
        store.create_endpoint(e, 1_000).await.unwrap();
    }
    let now = chrono::Utc::now().timestamp_millis();
    let message = Message {
        id: MessageId::new(),
        tenant,
        publisher: None,
        domain: None,
        event_type: "delivered".into(),
        payload: RawValue::from_string("{}".into()).unwrap(),
        idempotency_key: None,
        received_at: now,
        targets: endpoints.iter().map(|e| e.id).collect(),
    };
    store.insert_message(&message).await.unwrap();
    for e in &endpoints {
        let failed = Delivery {
            status: DeliveryStatus::Failed,
            last_error: Some("exhausted".into()),
            ..Delivery::fresh(message.id, e.id, tenant, now)
        };
        assert!(store.record_attempt(&failed, 0, None).await.unwrap());
    }
    let app = with_fallbacks(hookline_api::router(AppState {
        store: store.clone(),
        queue: flaky,
        clock: Arc::new(SystemClock),
        config: Arc::new(CoreConfig::default()),
        operator_key: None,
        sender: None,
        dead_letters: None,
    }));
    let path = format!("/v1/messages/{}/replay", message.id);
    let key = key.expose().to_string();

    let (status, body) = post(&app, &path, &key).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "internal_error");
    let status_of = |deliveries: &[Delivery]| -> Vec<(_, DeliveryStatus)> {
        let mut s: Vec<_> = deliveries.iter().map(|d| (d.endpoint, d.status)).collect();
        s.sort_by_key(|(e, _)| *e);
        s
    };
    let after = store.list_deliveries(message.id).await.unwrap();
    let pending: Vec<_> = after
        .iter()
        .filter(|d| d.status == DeliveryStatus::Pending)
        .collect();
    assert_eq!(pending.len(), 1, "{:?}", status_of(&after));
    assert_eq!(
        after
            .iter()
            .filter(|d| d.status == DeliveryStatus::Failed)
            .count(),
        1
    );
    let origin = Origin {
        message_id: MessageId::new(),
        received_at: now,
    };
    let queued = queue.receive(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(queued.len(), 1, "the task of the reopened delivery only");
    let Task::Attempt(task) = Task::parse(&queued[0].body, origin).unwrap() else {
        panic!("an attempt task");
    };
    assert_eq!(task.endpoint, pending[0].endpoint);

    // Replayed again: only the delivery that went back to failed.
    let (status, body) = post(&app, &path, &key).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["queued"], 1);
    let after = store.list_deliveries(message.id).await.unwrap();
    assert!(after.iter().all(|d| d.status == DeliveryStatus::Pending));
}
