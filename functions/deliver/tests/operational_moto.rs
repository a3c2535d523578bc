//! Operational webhooks and dead letters on the Lambda shape, against DynamoDB and SQS on
//! moto: the deliver function's handler disables an endpoint that answers 410 and queues
//! `hookline.endpoint.disabled` on the events queue, whose next batch delivers it, signed,
//! to the tenant's operational endpoint and to the operator's; and a producer's message
//! of a type nobody registered is dead-lettered with its reason, listed by the SQS dead
//! letters, and delivered after its type is added and it is redriven.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
#[path = "common/records.rs"]
mod records;

use aws_lambda_events::event::sqs::SqsMessage;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use hookline_core::aws::testing::{moto_sdk_config, unique};
use hookline_core::aws::{create_queue_pair, create_table, DynamoStore, SqsDeadLetters, SqsQueue};
use hookline_core::contract::{endpoint_to, stored_tenant};
use hookline_core::model::{CustomEventType, Endpoint, EndpointStatus, PageQuery};
use hookline_core::operational::{ENDPOINT_DISABLED, OPERATOR_TENANT};
use hookline_core::ports::{DeadLetters, Outgoing, Queue, SharedStore, MAX_RECEIVES_REASON};
use hookline_deliver::sqs;
use hookline_deliver::Deliverer;
use serde_json::{json, Value};
use sha2::Sha256;

type Log = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A receiver on loopback that answers `status` and keeps every request.
async fn receiver(status: u16) -> (String, Log) {
    let log: Log = Arc::default();
    let keep = log.clone();
    let app = axum::Router::new().route(
        "/",
        post(move |headers: HeaderMap, body: Bytes| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push((headers, body));
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, log)
}

/// The Standard Webhooks signature of a request, computed apart from Hookline's code.
fn signature(secret: &str, headers: &HeaderMap, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(headers["webhook-id"].as_bytes());
    mac.update(b".");
    mac.update(headers["webhook-timestamp"].as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

struct Moto {
    store: SharedStore,
    sqs: aws_sdk_sqs::Client,
    queue: Arc<SqsQueue>,
    dead_letter_queue: SqsQueue,
    dead_letters: SqsDeadLetters,
    dlq_url: String,
}

impl Moto {
    async fn new() -> Self {
        let sdk = moto_sdk_config().await;
        let ddb = aws_sdk_dynamodb::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let table = unique("hookline-ops");
        create_table(&ddb, &table).await.unwrap();
        let (queue_url, dlq_url) = create_queue_pair(&sqs, &unique("hookline-ops"))
            .await
            .unwrap();
        Moto {
            store: Arc::new(DynamoStore::new(ddb, table)),
            queue: Arc::new(SqsQueue::new(sqs.clone(), queue_url.clone())),
            dead_letter_queue: SqsQueue::new(sqs.clone(), dlq_url.clone()),
            dead_letters: SqsDeadLetters::new(sqs.clone(), dlq_url.clone(), queue_url),
            sqs,
            dlq_url,
        }
    }

    fn deliverer(&self) -> Deliverer {
        common::loopback_deliverer(
            self.store.clone(),
            self.queue.clone(),
            "0s,1s",
            Duration::from_secs(5),
        )
    }

    /// The next `want` messages of the events queue as records (within a bound on failure).
    async fn received(&self, want: usize) -> Vec<SqsMessage> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        while got.len() < want {
            assert!(Instant::now() < deadline, "{} of {want} came", got.len());
            got.extend(records::receive(&self.sqs, self.queue.queue_url(), 120).await);
        }
        got
    }

    /// Hands the records to the deliver function's handler, as the event source does;
    /// returns the ids it asks SQS to redeliver.
    async fn handle(&self, deliverer: &Deliverer, batch: Vec<SqsMessage>) -> usize {
        sqs::handle_batch(
            deliverer,
            &self.queue,
            &self.dead_letter_queue,
            records::event_of(batch),
        )
        .await
        .batch_item_failures
        .len()
    }

    async fn send(&self, body: Value) {
        self.queue
            .send(vec![Outgoing {
                body: body.to_string(),
                delay: Duration::ZERO,
            }])
            .await
            .unwrap();
    }

    async fn create(&self, endpoint: &Endpoint) {
        self.store.create_endpoint(endpoint, 1_000).await.unwrap();
    }
}

#[tokio::test]
async fn a_410_disables_the_endpoint_and_the_next_batch_tells_the_tenant_and_the_operator() {
    let m = Moto::new().await;
    let (tenant, _) = stored_tenant(m.store.as_ref(), None).await;
    let (gone_url, gone) = receiver(410).await;
    let (ops_url, ops) = receiver(200).await;
    let (operator_url, operator) = receiver(200).await;
    let mail = endpoint_to(tenant, &gone_url, Some(&["delivered"]));
    let tenant_ops = endpoint_to(tenant, &ops_url, Some(&[ENDPOINT_DISABLED]));
    let operator_ops = endpoint_to(OPERATOR_TENANT, &operator_url, Some(&[ENDPOINT_DISABLED]));
    for e in [&mail, &tenant_ops, &operator_ops] {
        m.create(e).await;
    }
    let deliverer = m.deliverer();

    m.send(json!({"tenant": tenant, "type": "delivered", "payload": {"n": 1}}))
        .await;
    let batch = m.received(1).await;
    assert_eq!(m.handle(&deliverer, batch).await, 0);
    assert_eq!(gone.lock().unwrap().len(), 1);
    let stored = m
        .store
        .get_endpoint(tenant, mail.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, EndpointStatus::Disabled);

    // The function queued the tenant's copy and the operator's, as any event is queued;
    // the exhausted delivery's event goes to nobody here (no endpoint names it).
    let mut published = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(ops.lock().unwrap().len() == 1 && operator.lock().unwrap().len() == 1) {
        assert!(
            Instant::now() < deadline,
            "the operational events never came"
        );
        let batch = records::receive(&m.sqs, m.queue.queue_url(), 120).await;
        published.extend(batch.iter().filter_map(|r| r.body.clone()));
        if !batch.is_empty() {
            assert_eq!(m.handle(&deliverer, batch).await, 0);
        }
    }
    let disabled_tasks = published
        .iter()
        .filter(|b| b.contains(ENDPOINT_DISABLED))
        .count();
    assert_eq!(
        disabled_tasks, 2,
        "one for the tenant, one for the operator"
    );

    for (log, endpoint) in [(&ops, &tenant_ops), (&operator, &operator_ops)] {
        let got = log.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "exactly one each");
        let (headers, body) = &got[0];
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["type"], ENDPOINT_DISABLED);
        assert_eq!(event["data"]["endpoint_id"], mail.id.to_string());
        assert_eq!(event["data"]["tenant_id"], tenant.to_string());
        let expected = signature(&endpoint.secrets.current.expose(), headers, body);
        let sent = headers["webhook-signature"].to_str().unwrap();
        assert!(sent.split(' ').any(|s| s == expected), "{sent}");
    }
}

#[tokio::test]
async fn an_unknown_type_is_dead_lettered_listed_and_delivered_after_a_redrive() {
    let m = Moto::new().await;
    let (tenant, _) = stored_tenant(m.store.as_ref(), None).await;
    let (url, seen) = receiver(200).await;
    m.create(&endpoint_to(tenant, &url, None)).await;
    let deliverer = m.deliverer();

    m.send(json!({"tenant": tenant, "type": "invoice.paid", "payload": {"invoice": 9}}))
        .await;
    let batch = m.received(1).await;
    assert_eq!(m.handle(&deliverer, batch).await, 0);
    assert!(seen.lock().unwrap().is_empty());
    // One the queue's redrive policy moved there: no reason of the function's own.
    m.sqs
        .send_message()
        .queue_url(&m.dlq_url)
        .message_body("{\"tenant\": \"nobody\"}")
        .send()
        .await
        .unwrap();

    let page = m
        .dead_letters
        .list_dead_letters(&PageQuery::first(10))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2, "{:?}", page.items);
    let unknown = page
        .items
        .iter()
        .find(|d| d.body.contains("invoice.paid"))
        .expect("the refused message");
    assert!(
        unknown.reason.contains("unknown event type"),
        "{}",
        unknown.reason
    );
    assert_eq!(unknown.tenant(), Some(tenant));
    assert!(unknown.at > 0);
    let moved = page.items.iter().find(|d| d.id != unknown.id).unwrap();
    assert_eq!(moved.reason, MAX_RECEIVES_REASON);
    assert_eq!(moved.tenant(), None);
    // Paged: one at a time, the cursor going on to the other.
    let first = m
        .dead_letters
        .list_dead_letters(&PageQuery::first(1))
        .await
        .unwrap();
    assert_eq!(first.items.len(), 1);
    let rest = m
        .dead_letters
        .list_dead_letters(&PageQuery {
            after: first.next_cursor.clone(),
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_ne!(rest.items[0].id, first.items[0].id);
    assert!(rest.next_cursor.is_none());

    m.store
        .create_event_type(&CustomEventType {
            name: "invoice.paid".into(),
            provider: "custom".into(),
            description: String::new(),
            sample: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            created_at: 1,
        })
        .await
        .unwrap();
    let redriven = m
        .dead_letters
        .redrive(Some(std::slice::from_ref(&unknown.id)))
        .await
        .unwrap();
    assert_eq!(redriven, vec![unknown.id.clone()]);
    let left = m
        .dead_letters
        .list_dead_letters(&PageQuery::first(10))
        .await
        .unwrap();
    assert_eq!(left.items.len(), 1, "the other one stays");
    assert_eq!(left.items[0].id, moved.id);

    let batch = m.received(1).await;
    assert_eq!(m.handle(&deliverer, batch).await, 0);
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let payload: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(payload, json!({"invoice": 9}));
}
