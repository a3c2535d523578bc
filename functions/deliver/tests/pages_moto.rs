//! Pages on the AWS adapters: the events of one publish stored as one DynamoDB item and
//! their successful first answers recorded in one more, against moto. A page's deliveries
//! read as any others; a copy of the page (SQS's duplicate receipt, during the lease or
//! after it) sends nothing again; a worker killed in the middle of a page sends again, after
//! the lease, the page's requests whose answers it had not recorded, each once.

mod common;
#[path = "../../../tests/chaos/faulty.rs"]
mod faulty;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use hookline_core::aws::testing::{moto_sdk_config, unique};
use hookline_core::aws::{create_queue_pair, create_table, DynamoStore, SqsQueue};
use hookline_core::contract::{endpoint_to, stored_tenant};
use hookline_core::ids::{EndpointId, MessageId, TenantId};
use hookline_core::model::{DeliveryStatus, Millis};
use hookline_core::ports::{Clock, SharedStore, SystemClock};
use hookline_core::task::{EventTask, Origin, PageTask, Task};
use hookline_deliver::{Deliverer, Disposition};
use serde_json::value::RawValue;

use faulty::{Answer, FaultyReceiver, Plan};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The system clock moved on by what a test says.
#[derive(Default)]
struct MovedClock {
    ahead: AtomicI64,
}

impl Clock for MovedClock {
    fn now(&self) -> Millis {
        SystemClock.now() + self.ahead.load(Ordering::SeqCst)
    }
}

struct Setup {
    ddb: aws_sdk_dynamodb::Client,
    table: String,
    store: SharedStore,
    clock: Arc<MovedClock>,
    deliverer: Arc<Deliverer>,
    tenant: TenantId,
    receiver: FaultyReceiver,
    /// The endpoints, by their receiver's path.
    endpoints: HashMap<&'static str, EndpointId>,
}

async fn setup(plan: Plan) -> Setup {
    let sdk = moto_sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let table = unique("hookline-pages");
    create_table(&ddb, &table).await.unwrap();
    let (queue_url, _) = create_queue_pair(&sqs, &unique("hookline-pages"))
        .await
        .unwrap();
    let store: SharedStore = Arc::new(DynamoStore::new(ddb.clone(), table.clone()));
    let queue = Arc::new(SqsQueue::new(sqs, queue_url));
    let receiver = FaultyReceiver::start(plan, Duration::from_secs(10)).await;
    let (tenant, _) = stored_tenant(store.as_ref(), None).await;
    let mut endpoints = HashMap::new();
    for path in ["/a", "/b"] {
        let e = endpoint_to(tenant, &receiver.url(path), None);
        store.create_endpoint(&e, 100).await.unwrap();
        endpoints.insert(path, e.id);
    }
    let clock = Arc::new(MovedClock::default());
    let deliverer = Arc::new(common::loopback_deliverer_at(
        store.clone(),
        queue,
        "0s,60s",
        TIMEOUT,
        clock.clone(),
    ));
    Setup {
        ddb,
        table,
        store,
        clock,
        deliverer,
        tenant,
        receiver,
        endpoints,
    }
}

/// A page of `n` events, as ingest queues a publish, and its ids.
fn page(tenant: TenantId, n: usize) -> (Vec<MessageId>, String) {
    let ids = MessageId::page(n);
    let events = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let payload = RawValue::from_string(format!(r#"{{"i":{i}}}"#)).unwrap();
            let at = SystemClock.now();
            EventTask::new(
                *id,
                tenant,
                "delivered".into(),
                payload,
                None,
                None,
                at,
                true,
            )
        })
        .collect();
    let body = Task::Page(PageTask::new(events).unwrap()).to_body();
    (ids, body)
}

fn origin() -> Origin {
    Origin {
        message_id: MessageId::new(),
        received_at: SystemClock.now(),
    }
}

impl Setup {
    /// How many requests each (path, message) pair received.
    fn received(&self) -> HashMap<(String, String), usize> {
        let mut seen = HashMap::new();
        for s in self.receiver.seen() {
            *seen.entry((s.endpoint, s.webhook_id)).or_default() += 1;
        }
        seen
    }

    /// The items stored under one partition key.
    async fn items_under(&self, pk: &str) -> Vec<HashMap<String, AttributeValue>> {
        self.ddb
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .items
            .unwrap_or_default()
    }

    fn past_the_lease(&self) {
        let lease = TIMEOUT + Duration::from_secs(16);
        self.clock
            .ahead
            .fetch_add(lease.as_millis() as i64, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_page_is_delivered_once_with_its_first_answers_in_one_item() {
    // `/b` answers the first request for the page's second message with a 503.
    let failing: Arc<std::sync::OnceLock<String>> = Arc::default();
    let failing_id = failing.clone();
    let plan: Plan = Arc::new(move |path, id, n| {
        if path == "/b" && n == 1 && failing_id.get().is_some_and(|f| f == id) {
            Answer::Status(503)
        } else {
            Answer::Status(200)
        }
    });
    let s = setup(plan).await;
    let (ids, body) = page(s.tenant, 3);
    failing.set(ids[1].to_string()).unwrap();
    assert_eq!(s.deliverer.handle(&body, origin()).await, Disposition::Done);

    let received = s.received();
    for id in &ids {
        for path in ["/a", "/b"] {
            assert_eq!(
                received.get(&(path.to_string(), id.to_string())),
                Some(&1),
                "{path} got {id} once"
            );
        }
    }
    // One item holds the page, one its first answers; only the failure has an item of
    // its own (a retry and a replay build on it).
    let firsts = s.items_under(&format!("P#{}", ids[0])).await;
    assert_eq!(firsts.len(), 1, "one item of first answers");
    for id in &ids {
        let own = s.items_under(&format!("M#{id}")).await;
        assert!(own.len() <= 1, "{own:?}");
    }
    let a = s.endpoints["/a"];
    let b = s.endpoints["/b"];
    for (i, id) in ids.iter().enumerate() {
        let message = s.store.get_message(s.tenant, *id).await.unwrap().unwrap();
        assert_eq!(message.payload.get(), format!(r#"{{"i":{i}}}"#));
        let deliveries = s.store.list_deliveries(*id).await.unwrap();
        assert_eq!(deliveries.len(), 2);
        for d in deliveries {
            let failed_first = i == 1 && d.endpoint == b;
            let want = if failed_first {
                DeliveryStatus::Pending
            } else {
                DeliveryStatus::Succeeded
            };
            assert_eq!(d.status, want, "message {i} to {}", d.endpoint);
            assert_eq!(d.attempts, 1);
        }
        let attempts = s.store.list_attempts(s.tenant, *id).await.unwrap();
        assert_eq!(attempts.len(), 2, "one attempt per endpoint");
        assert!(attempts.iter().any(|x| x.endpoint == a));
    }

    // The same page again, as SQS may hand it over twice: nothing is sent again, during
    // the lease or after it.
    assert_eq!(s.deliverer.handle(&body, origin()).await, Disposition::Done);
    s.past_the_lease();
    assert_eq!(s.deliverer.handle(&body, origin()).await, Disposition::Done);
    assert_eq!(s.received(), received, "no request after a recorded answer");
}

#[tokio::test]
async fn a_worker_killed_mid_page_sends_the_unrecorded_requests_again_once() {
    // Each first request to `/b` takes 2 s: the worker is killed while it waits, after
    // `/a` answered 200 to all.
    let plan: Plan = Arc::new(|path, _, n| {
        if path == "/b" && n == 1 {
            Answer::Late {
                status: 200,
                after_ms: 2_000,
            }
        } else {
            Answer::Status(200)
        }
    });
    let s = setup(plan).await;
    let (ids, body) = page(s.tenant, 4);
    let deliverer = s.deliverer.clone();
    let first = body.clone();
    let worker = tokio::spawn(async move { deliverer.handle(&first, origin()).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // Every request of the page read by the receiver: `/a` answered, `/b` not for 2 s.
    while s.received().len() < 2 * ids.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "the page was never sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.abort();
    assert!(worker.await.is_err(), "killed before the page ended");
    let sent_before = s.received();
    assert!(s.items_under(&format!("P#{}", ids[0])).await.is_empty());

    // Its copy during the lease waits; after the lease it sends each request once more.
    assert!(matches!(
        s.deliverer.handle(&body, origin()).await,
        Disposition::Retry(_)
    ));
    assert_eq!(s.received(), sent_before, "nothing sent during the lease");
    s.past_the_lease();
    assert_eq!(s.deliverer.handle(&body, origin()).await, Disposition::Done);
    let received = s.received();
    for id in &ids {
        for path in ["/a", "/b"] {
            let pair = (path.to_string(), id.to_string());
            assert_eq!(
                sent_before.get(&pair),
                Some(&1),
                "{path} got {id} before the kill"
            );
            assert_eq!(
                received.get(&pair),
                Some(&2),
                "{path} got {id} once more after the kill, and no more"
            );
        }
        let deliveries = s.store.list_deliveries(*id).await.unwrap();
        assert_eq!(deliveries.len(), 2);
        assert!(deliveries
            .iter()
            .all(|d| d.status == DeliveryStatus::Succeeded && d.attempts == 1));
    }
    // And then it is settled for good.
    assert_eq!(s.deliverer.handle(&body, origin()).await, Disposition::Done);
    assert_eq!(s.received(), received);
}
