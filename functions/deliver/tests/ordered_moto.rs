//! Ordered delivery on the Lambda shape, against DynamoDB and an SQS FIFO queue on moto:
//! a tenant's events are sequenced on the FIFO queue as ingest sequences them, and both
//! queues are pumped into the deliver function's handlers as the event sources would (the
//! FIFO queue's records with their message groups, moto locking a group while one of its
//! messages is in flight). A strict endpoint gets every message in publish order, one at a
//! time, through 500s and a message held failing; a plain endpoint of the same tenant gets
//! all of them while the strict one is held.

mod common;
#[path = "common/records.rs"]
mod records;
#[path = "common/source.rs"]
mod source;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsMessage};
use aws_sdk_sqs::types::QueueAttributeName;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::post;
use hookline_core::aws::testing::{moto_sdk_config, unique};
use hookline_core::aws::{create_queue_pair, create_table, DynamoStore, SqsQueue};
use hookline_core::contract::{endpoint_to, stored_tenant};
use hookline_core::ids::MessageId;
use hookline_core::model::Ordering;
use hookline_core::ports::{Clock, Queue, Sequenced, SharedStore, SystemClock};
use hookline_core::task::{EventTask, Task};
use hookline_deliver::{sqs, Deliverer};
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// Kept to what moto gets through in well under a minute: a sequence is one message at a
/// time.
const MESSAGES: usize = 40;
/// Messages the strict receiver answers 500 first, this many times each.
const FAIL_FIRST: [(usize, usize); 4] = [(0, 1), (11, 2), (27, 1), (35, 3)];
/// The message the strict receiver fails until the plain endpoint has every message.
const HELD: usize = 20;
/// Retries a second apart, enough for the held message to outlast the plain endpoint's
/// deliveries (bounded by the wait below).
const SCHEDULE: &str = "0s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s";
/// Bounds a failure only.
const PATIENCE: Duration = Duration::from_secs(240);

/// Every request the receiver got: path, message number, status answered.
type Log = Arc<Mutex<Vec<(String, usize, u16)>>>;

async fn receiver(hold: Arc<AtomicBool>) -> (String, Log) {
    let log: Log = Arc::default();
    let keep = log.clone();
    let app = axum::Router::new().route(
        "/{path}",
        post(move |Path(path): Path<String>, body: String| {
            let (keep, hold) = (keep.clone(), hold.clone());
            async move {
                let payload: Value = serde_json::from_str(&body).unwrap();
                let i = payload["data"]["i"]
                    .as_u64()
                    .or_else(|| payload["i"].as_u64())
                    .unwrap() as usize;
                let mut log = keep.lock().unwrap();
                let seen = log.iter().filter(|(p, n, _)| *p == path && *n == i).count();
                let fail = path == "strict"
                    && (FAIL_FIRST.iter().any(|(n, times)| *n == i && seen < *times)
                        || (i == HELD && hold.load(AtomicOrdering::SeqCst)));
                let status = if fail { 500 } else { 200 };
                log.push((path, i, status));
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, log)
}

/// The message numbers a path answered 2xx to, in the order of the answers.
fn delivered(log: &Log, path: &str) -> Vec<usize> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(p, _, status)| p == path && *status == 200)
        .map(|(_, i, _)| *i)
        .collect()
}

/// Deletes the records an invocation handled, as the event source does with
/// `ReportBatchItemFailures`: all but the failures.
async fn settle(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    records: &[SqsMessage],
    r: &SqsBatchResponse,
) {
    let failed: HashSet<&str> = r
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    source::delete_handled(sqs, url, records, |id| failed.contains(id))
        .await
        .unwrap();
}

struct Pump {
    sqs: aws_sdk_sqs::Client,
    deliverer: Arc<Deliverer>,
    events: SqsQueue,
    ordered: SqsQueue,
    dead_letters: SqsQueue,
    stop: Arc<AtomicBool>,
    /// Records of the FIFO queue that came without their message group.
    ungrouped: Arc<Mutex<usize>>,
}

impl Pump {
    /// The event source of one queue: receive, invoke, delete what was handled.
    async fn run(self: Arc<Self>, fifo: bool) {
        let url = if fifo {
            self.ordered.queue_url().to_owned()
        } else {
            self.events.queue_url().to_owned()
        };
        while !self.stop.load(AtomicOrdering::SeqCst) {
            let records = records::receive(&self.sqs, &url, 30).await;
            if records.is_empty() {
                continue;
            }
            let event = records::event_of(records.clone());
            let response = if fifo {
                if !sqs::is_ordered(&event) {
                    *self.ungrouped.lock().unwrap() += records.len();
                }
                sqs::handle_ordered_batch(&self.deliverer, &self.ordered, &self.dead_letters, event)
                    .await
            } else {
                sqs::handle_batch(&self.deliverer, &self.events, &self.dead_letters, event).await
            };
            settle(&self.sqs, &url, &records, &response).await;
        }
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_endpoint_gets_every_message_in_publish_order_through_failures_on_fifo() {
    let sdk = moto_sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs_client = aws_sdk_sqs::Client::new(&sdk);
    let table = unique("hookline-ordered");
    create_table(&ddb, &table).await.unwrap();
    let (queue_url, dlq_url) = create_queue_pair(&sqs_client, &unique("hookline-ordered"))
        .await
        .unwrap();
    let fifo_url = sqs_client
        .create_queue()
        .queue_name(format!("{}.fifo", unique("hookline-ordered")))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let store: SharedStore = Arc::new(DynamoStore::new(ddb.clone(), table.clone()));
    let queue = Arc::new(
        SqsQueue::new(sqs_client.clone(), queue_url.clone()).with_ordered_url(fifo_url.clone()),
    );

    let hold = Arc::new(AtomicBool::new(true));
    let (url, log) = receiver(hold.clone()).await;
    let (tenant, _) = stored_tenant(store.as_ref(), None).await;
    let mut strict = endpoint_to(tenant, &format!("{url}/strict"), None);
    strict.ordering = Ordering::Strict;
    store.create_endpoint(&strict, 1_000).await.unwrap();
    let plain = endpoint_to(tenant, &format!("{url}/plain"), None);
    store.create_endpoint(&plain, 1_000).await.unwrap();

    // Sequenced as ingest sequences a tenant's events when it has a strict endpoint.
    let now = SystemClock.now();
    let sequenced: Vec<Sequenced> = (0..MESSAGES)
        .map(|i| {
            let id = MessageId::new();
            let payload = RawValue::from_string(json!({"i": i}).to_string()).unwrap();
            let task = EventTask::new(id, tenant, "ordered".into(), payload, None, None, now, true)
                .with_ordering(None, true);
            Sequenced {
                group: task.group(),
                dedup: id.to_string(),
                body: Task::Event(task).to_body(),
            }
        })
        .collect();
    queue.send_sequenced(sequenced).await.unwrap();

    let deliverer = Arc::new(common::loopback_deliverer(
        store.clone(),
        queue.clone(),
        SCHEDULE,
        Duration::from_secs(5),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let pump = Arc::new(Pump {
        sqs: sqs_client.clone(),
        deliverer,
        events: SqsQueue::new(sqs_client.clone(), queue_url.clone()),
        ordered: SqsQueue::new(sqs_client.clone(), fifo_url.clone()),
        dead_letters: SqsQueue::new(sqs_client.clone(), dlq_url.clone()),
        stop: stop.clone(),
        ungrouped: Arc::default(),
    });
    // Two invocations on the FIFO queue at once: the group lock, not the pump, keeps a
    // sequence one at a time.
    let pumps = vec![
        tokio::spawn(pump.clone().run(true)),
        tokio::spawn(pump.clone().run(true)),
        tokio::spawn(pump.clone().run(false)),
    ];

    // The plain endpoint is not held up by the strict one's held message.
    wait_for("the plain endpoint to get every message", || {
        delivered(&log, "plain")
            .iter()
            .collect::<HashSet<_>>()
            .len()
            == MESSAGES
            && log
                .lock()
                .unwrap()
                .iter()
                .any(|(p, i, _)| p == "strict" && *i == HELD)
    })
    .await;
    let strict_so_far = delivered(&log, "strict");
    assert_eq!(
        strict_so_far,
        (0..HELD).collect::<Vec<_>>(),
        "the strict endpoint stops at the held message"
    );
    hold.store(false, AtomicOrdering::SeqCst);
    wait_for("the strict endpoint to get every message", || {
        delivered(&log, "strict").len() >= MESSAGES
    })
    .await;
    stop.store(true, AtomicOrdering::SeqCst);
    for p in pumps {
        p.await.unwrap();
    }

    assert_eq!(
        delivered(&log, "strict"),
        (0..MESSAGES).collect::<Vec<_>>(),
        "each message once, in publish order"
    );
    // One at a time: no request for a message before the one ahead of it succeeded.
    let requests: Vec<(usize, u16)> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _, _)| p == "strict")
        .map(|(_, i, s)| (*i, *s))
        .collect();
    for pair in requests.windows(2) {
        let ((a, status), (b, _)) = (pair[0], pair[1]);
        let next = if status == 200 { a + 1 } else { a };
        assert_eq!(b, next, "strict requests in order: {pair:?}");
    }
    let failures: HashMap<usize, usize> =
        requests
            .iter()
            .filter(|(_, s)| *s == 500)
            .fold(HashMap::new(), |mut m, (i, _)| {
                *m.entry(*i).or_default() += 1;
                m
            });
    for (i, times) in FAIL_FIRST {
        assert_eq!(failures.get(&i), Some(&times), "message {i} failed first");
    }
    assert!(failures.get(&HELD).is_some_and(|n| *n >= 1));
    assert_eq!(
        *pump.ungrouped.lock().unwrap(),
        0,
        "FIFO records carry their group"
    );

    for u in [&queue_url, &dlq_url, &fifo_url] {
        sqs_client.delete_queue().queue_url(u).send().await.unwrap();
    }
    ddb.delete_table().table_name(&table).send().await.unwrap();
}
