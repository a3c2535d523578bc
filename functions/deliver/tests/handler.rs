//! The deliver function's handler fed real SQS events, against DynamoDB and SQS on moto
//! and local receivers: a malformed record goes to the dead-letter queue with its reason
//! without holding up the others; a record that must wait (another worker holds its
//! delivery, or the lease on its event's first attempts) comes back when the wait is over,
//! by its visibility or, on its last receives, as a delayed copy that keeps its message
//! id, and is left to the visibility timeout after too many copies; a duplicate receipt of
//! the batch does not re-send what already succeeded; records handled while another waits
//! on a hanging receiver are deleted without waiting for it, and a batch that ends
//! together makes no SQS call of its own; and a request limit bounds the requests in
//! flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
#[path = "common/records.rs"]
mod records;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::QueueAttributeName;
use axum::routing::post;
use hookline_core::aws::sqs::{Attribute, Attributed, REASON_ATTRIBUTE};
use hookline_core::aws::testing::{moto_sdk_config, unique};
use hookline_core::aws::{create_queue_pair, create_table, DynamoStore, SqsQueue};
use hookline_core::contract::{endpoint_to, stored_tenant};
use hookline_core::ids::{EndpointId, MessageId, TenantId};
use hookline_core::model::{Delivery, Message};
use hookline_core::ports::{FirstAttempts, Outgoing, Queue, SharedStore};
use hookline_core::task::{Origin, Task};
use hookline_deliver::sqs::{self, MAX_SHORT_WAITS, WAITS_ATTRIBUTE};
use hookline_deliver::Deliverer;
use serde_json::json;
use tokio::sync::Notify;

/// A receiver on loopback that counts the webhook ids it gets.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/",
        post(move |headers: axum::http::HeaderMap| {
            let log = log.clone();
            async move {
                let id = headers["webhook-id"].to_str().unwrap().to_string();
                log.lock().unwrap().push(id);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// The message the deliverer would store for a record, as another invocation stored it.
fn message_of(record: &SqsMessage, targets: Vec<EndpointId>) -> Message {
    let Task::Event(task) =
        Task::parse(record.body.as_deref().unwrap(), sqs::origin_of(record)).unwrap()
    else {
        panic!("an event record");
    };
    Message {
        id: task.id,
        tenant: task.tenant,
        publisher: None,
        domain: task.domain,
        event_type: task.event_type,
        payload: task.payload,
        idempotency_key: task.idempotency_key,
        received_at: task.received_at,
        targets,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A table and an events queue with its dead-letter queue, on moto.
struct Moto {
    store: SharedStore,
    sqs: aws_sdk_sqs::Client,
    queue: Arc<SqsQueue>,
    dead_letters: SqsQueue,
    dlq_url: String,
    tenant: TenantId,
}

impl Moto {
    /// With the default redrive policy of [`create_queue_pair`].
    async fn new() -> Self {
        Moto::with_max_receives(None).await
    }

    /// With the redrive policy's `maxReceiveCount` set to `max`, if given.
    async fn with_max_receives(max: Option<u32>) -> Self {
        let sdk = moto_sdk_config().await;
        let ddb = aws_sdk_dynamodb::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let table = unique("hookline-deliver");
        create_table(&ddb, &table).await.unwrap();
        let (queue_url, dlq_url) = create_queue_pair(&sqs, &unique("hookline-deliver"))
            .await
            .unwrap();
        if let Some(max) = max {
            let arn = sqs
                .get_queue_attributes()
                .queue_url(&dlq_url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .unwrap()
                .attributes
                .unwrap()[&QueueAttributeName::QueueArn]
                .clone();
            let policy = json!({"deadLetterTargetArn": arn, "maxReceiveCount": max});
            sqs.set_queue_attributes()
                .queue_url(&queue_url)
                .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
                .send()
                .await
                .unwrap();
        }
        let store: SharedStore = Arc::new(DynamoStore::new(ddb, table));
        let (tenant, _) = stored_tenant(store.as_ref(), None).await;
        Moto {
            store,
            queue: Arc::new(SqsQueue::new(sqs.clone(), queue_url)),
            dead_letters: SqsQueue::new(sqs.clone(), dlq_url.clone()),
            sqs,
            dlq_url,
            tenant,
        }
    }

    fn deliverer(&self, timeout: Duration) -> Deliverer {
        common::loopback_deliverer(self.store.clone(), self.queue.clone(), "0s,1s", timeout)
    }

    async fn handle(&self, deliverer: &Deliverer, batch: SqsEvent) -> Vec<String> {
        sqs::handle_batch(deliverer, &self.queue, &self.dead_letters, batch)
            .await
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect()
    }

    /// The bodies of the fixture batch, naming this tenant.
    fn fixture_bodies(&self) -> Vec<String> {
        let path = format!(
            "{}/../../tests/fixtures/sqs-batch.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path)
            .unwrap()
            .replace("{{TENANT}}", &self.tenant.to_string());
        let batch: SqsEvent = serde_json::from_str(&text).unwrap();
        batch.records.into_iter().map(|r| r.body.unwrap()).collect()
    }

    /// The bodies sent to the events queue and received back as the records of a batch,
    /// in the order of `bodies`, hidden for two minutes: longer than any test waits.
    async fn batch_of(&self, bodies: &[String]) -> Vec<SqsMessage> {
        self.queue
            .send(
                bodies
                    .iter()
                    .map(|body| Outgoing {
                        body: body.clone(),
                        delay: Duration::ZERO,
                    })
                    .collect(),
            )
            .await
            .unwrap();
        let mut records = self.received(bodies.len(), Duration::from_secs(20)).await;
        records.sort_by_key(|r| bodies.iter().position(|b| Some(b) == r.body.as_ref()));
        records
    }

    /// The next `want` messages of the events queue as records, received as soon as they
    /// are visible (within `within`, a bound on failure only), hidden for two minutes.
    async fn received(&self, want: usize, within: Duration) -> Vec<SqsMessage> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < want {
            assert!(
                Instant::now() < deadline,
                "{} of {want} messages came",
                got.len()
            );
            got.extend(records::receive(&self.sqs, self.queue.queue_url(), 120).await);
        }
        got
    }

    /// A count the events queue reports.
    async fn count(&self, name: QueueAttributeName) -> usize {
        self.sqs
            .get_queue_attributes()
            .queue_url(self.queue.queue_url())
            .attribute_names(name.clone())
            .send()
            .await
            .unwrap()
            .attributes
            .and_then(|a| a.get(&name).and_then(|v| v.parse().ok()))
            .unwrap()
    }
}

fn receive_count(record: &SqsMessage) -> &str {
    &record.attributes["ApproximateReceiveCount"]
}

/// The message id a copy's task carries (an origin is given only for a parse to succeed:
/// a copy is always a task, which carries its own ids; a page's first).
fn task_id(record: &SqsMessage) -> MessageId {
    let origin = Origin {
        message_id: MessageId::new(),
        received_at: 0,
    };
    match Task::parse(record.body.as_deref().unwrap(), origin).unwrap() {
        Task::Event(task) => task.id,
        Task::Attempt(task) => task.message,
        Task::Page(page) => page.events[0].id,
    }
}

fn waits(record: &SqsMessage) -> Option<&str> {
    record
        .message_attributes
        .get(WAITS_ATTRIBUTE)
        .and_then(|a| a.string_value.as_deref())
}

#[tokio::test]
async fn a_batch_delivers_what_it_can_parks_the_malformed_and_puts_off_what_must_wait() {
    let m = Moto::new().await;
    let (all_url, all_seen) = receiver().await;
    let (opened_url, opened_seen) = receiver().await;
    let everything = endpoint_to(m.tenant, &all_url, None);
    let opened_only = endpoint_to(m.tenant, &opened_url, Some(&["opened"]));
    m.store.create_endpoint(&everything, 1_000).await.unwrap();
    m.store.create_endpoint(&opened_only, 1_000).await.unwrap();
    let deliverer = m.deliverer(Duration::from_secs(5));

    let records = m.batch_of(&m.fixture_bodies()).await;
    let ids: Vec<_> = records
        .iter()
        .map(|r| sqs::origin_of(r).message_id)
        .collect();

    // Another worker stored the second record's message (its lease on the first attempts
    // over) and holds its "opened" delivery right now.
    m.store
        .insert_message(&message_of(
            &records[1],
            vec![everything.id, opened_only.id],
        ))
        .await
        .unwrap();
    let lease_until = now_ms() + 1_500;
    let held = Delivery::fresh(ids[1], opened_only.id, m.tenant, now_ms());
    assert!(m
        .store
        .claim_delivery(&held, 0, now_ms(), lease_until)
        .await
        .unwrap());

    let failed = m
        .handle(&deliverer, records::event_of(records.clone()))
        .await;
    assert_eq!(failed, vec![records[1].message_id.clone().unwrap()]);
    let mut got = all_seen.lock().unwrap().clone();
    got.sort();
    let mut expected: Vec<String> = [ids[0], ids[1], ids[3]]
        .iter()
        .map(|id| id.to_string())
        .collect();
    expected.sort();
    assert_eq!(got, expected, "the healthy records were delivered");
    assert!(opened_seen.lock().unwrap().is_empty());

    let parked = m
        .sqs
        .receive_message()
        .queue_url(&m.dlq_url)
        .message_attribute_names("All")
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].body.as_deref(), Some("{not json"));
    let reason = parked[0]
        .message_attributes
        .as_ref()
        .and_then(|a| a.get(REASON_ATTRIBUTE))
        .and_then(|v| v.string_value.as_deref())
        .unwrap_or_default();
    assert!(reason.starts_with("not a JSON object"), "{reason}");

    // The held record comes back as the lease ends, not after the two minutes it was
    // received for: the same message, received a second time, and no copy of it.
    let back = m.received(1, Duration::from_secs(20)).await;
    assert_eq!(back[0].message_id, records[1].message_id);
    assert_eq!(receive_count(&back[0]), "2");
    assert_eq!(
        m.count(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .await,
        0
    );
    let failed = m.handle(&deliverer, records::event_of(back)).await;
    assert!(failed.is_empty());
    assert_eq!(*opened_seen.lock().unwrap(), vec![ids[1].to_string()]);

    // SQS hands the whole batch over again: nothing is sent twice.
    let failed = m.handle(&deliverer, records::event_of(records)).await;
    assert!(failed.is_empty());
    assert_eq!(all_seen.lock().unwrap().len(), 3, "nothing was sent twice");
    assert_eq!(opened_seen.lock().unwrap().len(), 1);

    let message = m
        .store
        .get_message(m.tenant, ids[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.targets, vec![everything.id]);
    let attempts = m.store.list_attempts(m.tenant, ids[0]).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, Some(200));
}

#[tokio::test]
async fn on_its_last_receives_a_record_waits_as_a_copy_that_keeps_its_message_id() {
    // Two receives before the dead-letter queue: the first has none to spare.
    let m = Moto::with_max_receives(Some(2)).await;
    assert_eq!(m.queue.max_receives().await.unwrap(), Some(2));
    let (url, seen) = receiver().await;
    let endpoint = endpoint_to(m.tenant, &url, None);
    m.store.create_endpoint(&endpoint, 1_000).await.unwrap();
    let deliverer = m.deliverer(Duration::from_secs(5));

    // A producer's envelope: its message id comes from SQS's id of the message.
    let records = m.batch_of(&m.fixture_bodies()[..1]).await;
    let id = sqs::origin_of(&records[0]).message_id;

    // Another invocation got the same message first: it stored it with a lease on the
    // first attempts and is making them.
    let lease_until = now_ms() + 1_500;
    let stored = m
        .store
        .insert_message_leased(
            &message_of(&records[0], vec![endpoint.id]),
            now_ms(),
            lease_until,
        )
        .await
        .unwrap();
    assert_eq!(stored.first_attempts, FirstAttempts::Leased);

    let failed = m
        .handle(&deliverer, records::event_of(records.clone()))
        .await;
    assert!(failed.is_empty(), "done with, its copy waiting: {failed:?}");
    assert!(seen.lock().unwrap().is_empty(), "nothing is sent meanwhile");

    // That invocation died. The copy is due when the lease ends: a new message, the
    // envelope now the event task it reads as, under the id it was given.
    let copies = m.received(1, Duration::from_secs(20)).await;
    assert_ne!(copies[0].message_id, records[0].message_id);
    assert_eq!(receive_count(&copies[0]), "1");
    assert_eq!(waits(&copies[0]), Some("1"));
    assert_eq!(task_id(&copies[0]), id);
    let failed = m.handle(&deliverer, records::event_of(copies)).await;
    assert!(failed.is_empty());
    assert_eq!(*seen.lock().unwrap(), vec![id.to_string()]);
    let failed = m.handle(&deliverer, records::event_of(records)).await;
    assert!(failed.is_empty());
    assert_eq!(seen.lock().unwrap().len(), 1, "nothing is sent twice");
    let attempts = m.store.list_attempts(m.tenant, id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, Some(200));
}

#[tokio::test]
async fn a_record_put_off_too_often_is_left_to_the_visibility_timeout() {
    let m = Moto::with_max_receives(Some(2)).await;
    let (url, seen) = receiver().await;
    let endpoint = endpoint_to(m.tenant, &url, None);
    m.store.create_endpoint(&endpoint, 1_000).await.unwrap();
    let deliverer = m.deliverer(Duration::from_secs(5));

    // A copy that was put off the most times already.
    m.queue
        .send_with_attributes(vec![Attributed {
            message: Outgoing {
                body: m.fixture_bodies()[0].clone(),
                delay: Duration::ZERO,
            },
            attributes: vec![Attribute::number(
                WAITS_ATTRIBUTE,
                u64::from(MAX_SHORT_WAITS),
            )],
        }])
        .await
        .unwrap();
    let records = m.received(1, Duration::from_secs(20)).await;
    assert_eq!(
        waits(&records[0]),
        Some(MAX_SHORT_WAITS.to_string().as_str())
    );
    m.store
        .insert_message_leased(
            &message_of(&records[0], vec![endpoint.id]),
            now_ms(),
            now_ms() + 60_000,
        )
        .await
        .unwrap();

    let failed = m
        .handle(&deliverer, records::event_of(records.clone()))
        .await;
    assert_eq!(failed, vec![records[0].message_id.clone().unwrap()]);
    for name in [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesDelayed,
    ] {
        assert_eq!(m.count(name).await, 0, "no copy, and still hidden");
    }
    assert!(seen.lock().unwrap().is_empty());
}

/// A receiver that answers `/ok` at once, and holds `/hang` until released.
struct Hanging {
    base: String,
    ok: Arc<Mutex<Vec<String>>>,
    /// Requests `/hang` holds now.
    holding: Arc<AtomicUsize>,
    release: Arc<Notify>,
}

async fn hanging_receiver() -> Hanging {
    let ok = Arc::new(Mutex::new(Vec::new()));
    let holding = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let log = ok.clone();
    let (held, released) = (holding.clone(), release.clone());
    let app = axum::Router::new()
        .route(
            "/ok",
            post(move |headers: axum::http::HeaderMap| {
                let log = log.clone();
                async move {
                    let id = headers["webhook-id"].to_str().unwrap().to_string();
                    log.lock().unwrap().push(id);
                    "ok"
                }
            }),
        )
        .route(
            "/hang",
            post(move || {
                let (held, released) = (held.clone(), released.clone());
                async move {
                    held.fetch_add(1, Ordering::SeqCst);
                    released.notified().await;
                    held.fetch_sub(1, Ordering::SeqCst);
                    "late"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Hanging {
        base,
        ok,
        holding,
        release,
    }
}

fn envelope(tenant: TenantId, event_type: &str) -> Outgoing {
    Outgoing {
        body: json!({"tenant": tenant.to_string(), "type": event_type, "payload": {}}).to_string(),
        delay: Duration::ZERO,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_handled_are_deleted_while_another_waits_on_a_hanging_receiver() {
    let m = Moto::new().await;
    let r = hanging_receiver().await;
    let ok = endpoint_to(m.tenant, &format!("{}/ok", r.base), Some(&["delivered"]));
    let hang = endpoint_to(m.tenant, &format!("{}/hang", r.base), Some(&["clicked"]));
    m.store.create_endpoint(&ok, 1_000).await.unwrap();
    m.store.create_endpoint(&hang, 1_000).await.unwrap();
    let deliverer = Arc::new(m.deliverer(Duration::from_secs(30)));

    m.queue
        .send(vec![
            envelope(m.tenant, "delivered"),
            envelope(m.tenant, "clicked"),
            envelope(m.tenant, "delivered"),
        ])
        .await
        .unwrap();
    let mut records = Vec::new();
    while records.len() < 3 {
        records.extend(records::receive(&m.sqs, m.queue.queue_url(), 120).await);
    }
    let m = Arc::new(m);
    let invocation = {
        let (m, deliverer) = (m.clone(), deliverer.clone());
        let batch = records::event_of(records);
        tokio::spawn(async move { m.handle(&deliverer, batch).await })
    };

    // The two others are delivered and deleted while the hanging request is held.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let in_flight = m
            .count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .await;
        if in_flight == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{in_flight} records still in flight"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(r.ok.lock().unwrap().len(), 2, "both delivered");
    assert_eq!(
        r.holding.load(Ordering::SeqCst),
        1,
        "the hanging one is still held"
    );
    assert!(!invocation.is_finished());

    r.release.notify_waiters();
    let failed = invocation.await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(
        m.count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .await,
        1,
        "the last record is the event source's to delete"
    );
}

#[tokio::test]
async fn a_batch_that_ends_together_makes_no_sqs_call_of_its_own() {
    let m = Moto::new().await;
    let (url, seen) = receiver().await;
    m.store
        .create_endpoint(&endpoint_to(m.tenant, &url, None), 1_000)
        .await
        .unwrap();
    let deliverer = m.deliverer(Duration::from_secs(5));
    m.queue
        .send((0..5).map(|_| envelope(m.tenant, "delivered")).collect())
        .await
        .unwrap();
    let mut records = Vec::new();
    while records.len() < 5 {
        records.extend(records::receive(&m.sqs, m.queue.queue_url(), 120).await);
    }
    let failed = m.handle(&deliverer, records::event_of(records)).await;
    assert!(failed.is_empty());
    assert_eq!(seen.lock().unwrap().len(), 5);
    // Every record still in flight, nothing sent: no delete and no send of the function's
    // own (the event source deletes the batch).
    assert_eq!(
        m.count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .await,
        5
    );
    for name in [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesDelayed,
    ] {
        assert_eq!(m.count(name).await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_limit_bounds_the_requests_in_flight_of_a_batch() {
    let m = Moto::new().await;
    // One receiver, slow to answer, that notes the most requests it held at once.
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let (n, max, all) = (now.clone(), most.clone(), total.clone());
    let app = axum::Router::new().route(
        "/{path}",
        post(move || {
            let (n, max, all) = (n.clone(), max.clone(), all.clone());
            async move {
                all.fetch_add(1, Ordering::SeqCst);
                let at_once = n.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(at_once, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // Six endpoints, one event each: six requests, to six endpoints.
    let types = [
        "delivered",
        "opened",
        "clicked",
        "accepted",
        "complained",
        "unsubscribed",
    ];
    for t in types {
        let endpoint = endpoint_to(m.tenant, &format!("{base}/{t}"), Some(&[t]));
        m.store.create_endpoint(&endpoint, 1_000).await.unwrap();
    }
    m.queue
        .send(types.iter().map(|t| envelope(m.tenant, t)).collect())
        .await
        .unwrap();
    let mut records = Vec::new();
    while records.len() < types.len() {
        records.extend(records::receive(&m.sqs, m.queue.queue_url(), 120).await);
    }
    let deliverer = m.deliverer(Duration::from_secs(5)).with_request_limit(2);
    let failed = m.handle(&deliverer, records::event_of(records)).await;
    assert!(failed.is_empty());
    assert_eq!(now.load(Ordering::SeqCst), 0);
    assert_eq!(total.load(Ordering::SeqCst), types.len(), "all made");
    assert_eq!(most.load(Ordering::SeqCst), 2, "two at a time");
}
