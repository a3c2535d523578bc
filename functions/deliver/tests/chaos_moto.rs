//! The chaos scenario on the AWS adapters: a few hundred events × 3 endpoints through
//! `DynamoStore`, `SqsQueue` and the deliver function's batch handler against moto, with a
//! receiver that fails on purpose. The queue is pumped into the handler as the SQS event
//! source would, with three more kinds of trouble: the same batch handed to two concurrent
//! invocations (duplicate receipts), a visibility timeout shorter than some deliveries (the
//! message comes back while the first invocation still waits on the receiver), and partial
//! batch failures (records put off while another worker holds their deliveries, by their
//! visibility, or as delayed copies once they near the redrive policy's receive count).
//! Most events come in pages (one queue message and one stored item for ten, their first
//! answers recorded together). Every pair must settle as planned, no request may follow a
//! recorded 2xx, and the attempt log must match what the receiver saw.

mod common;
#[path = "../../../tests/chaos/faulty.rs"]
mod faulty;
#[path = "common/records.rs"]
mod records;
#[path = "common/source.rs"]
mod source;
#[path = "../../../tests/chaos/verify.rs"]
mod verify;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsMessage};
use aws_sdk_sqs::types::QueueAttributeName;
use hookline_core::aws::testing::{moto_sdk_config, unique};
use hookline_core::aws::{create_queue_pair, create_table, DynamoStore, SqsQueue};
use hookline_core::contract::{endpoint_to, stored_tenant};
use hookline_core::ids::{EndpointId, MessageId, TenantId};
use hookline_core::model::{Delivery, Message};
use hookline_core::ports::{Clock, Outgoing, Queue, SharedStore, SystemClock};
use hookline_core::task::{EventTask, Origin, PageTask, Task};
use hookline_deliver::sqs::{self, WAITS_ATTRIBUTE};
use hookline_deliver::Deliverer;
use serde_json::json;
use serde_json::value::RawValue;

use faulty::{FaultyReceiver, Plan};
use verify::{check_pair, Kill, Scenario, Tally, CUT_500, LATE_MS, S400, S500, TOO_MANY};

const EVENTS: usize = 100;
/// Whole seconds: SQS delays are.
const SCHEDULE: &str = "0s,1s,1s,1s";
/// Longer than a late answer, so it succeeds; the lease is this plus 15 s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// Shorter than a late answer, so its message comes back mid-delivery.
const VISIBILITY_SECS: i32 = 1;
// A late answer outlasts the visibility timeout, and not the request timeout.
const _: () = assert!(LATE_MS > VISIBILITY_SECS as u64 * 1000);
const _: () = assert!(LATE_MS < REQUEST_TIMEOUT.as_millis() as u64);
/// Invocations of the handler running at once.
const INVOCATIONS: usize = 3;
/// Every this many batches is handed to two invocations at once.
const DUPLICATE_EVERY: usize = 3;
const PATHS: [&str; 3] = ["/a", "/b", "/c"];

/// This suite's mix, weights out of 100: the local suite's faults plus late answers.
const MOTO_SCENARIOS: &[(u64, Scenario)] = &[
    (40, Scenario::Ok),
    (8, Scenario::LateOk),
    (6, Scenario::FailThenOk(&[S500])),
    (5, Scenario::FailThenOk(&[faulty::Answer::Reset])),
    (4, Scenario::FailThenOk(&[faulty::Answer::Redirect])),
    (4, Scenario::FailThenOk(&[TOO_MANY])),
    (3, Scenario::FailThenOk(&[faulty::Answer::Hang])),
    (4, Scenario::FailThenOk(&[S500, CUT_500])),
    (5, Scenario::TruncatedOk),
    (3, Scenario::SlowHugeOk),
    (6, Scenario::Permanent(&[])),
    (3, Scenario::Permanent(&[S500])),
    (6, Scenario::Exhausted(&[S500])),
    (3, Scenario::Exhausted(&[faulty::Answer::Reset, S400])),
];

fn deliverer(store: SharedStore, queue: Arc<SqsQueue>) -> Deliverer {
    common::loopback_deliverer(store, queue, SCHEDULE, REQUEST_TIMEOUT)
}

fn now_ms() -> i64 {
    SystemClock.now()
}

/// The origin of a queue message; event tasks carry their own id, so it is never used.
fn origin() -> Origin {
    Origin {
        message_id: MessageId::new(),
        received_at: now_ms(),
    }
}

/// Event `i` of the run, as ingest queues it.
fn delivered(id: MessageId, tenant: TenantId, i: usize) -> EventTask {
    let payload = RawValue::from_string(json!({"i": i}).to_string()).unwrap();
    EventTask::new(
        id,
        tenant,
        "delivered".into(),
        payload,
        None,
        None,
        now_ms(),
        true,
    )
}

fn event_task(tenant: TenantId, i: usize) -> (MessageId, Outgoing) {
    let id = MessageId::new();
    let body = Task::Event(delivered(id, tenant, i)).to_body();
    (
        id,
        Outgoing {
            body,
            delay: Duration::ZERO,
        },
    )
}

/// Events `from..to` as pages of ten, as ingest queues a publish of many: each page one
/// queue message and one stored item, its first answers recorded together.
fn page_tasks(tenant: TenantId, from: usize, to: usize) -> (Vec<MessageId>, Vec<Outgoing>) {
    let (mut ids, mut out) = (Vec::new(), Vec::new());
    let numbers: Vec<usize> = (from..to).collect();
    for chunk in numbers.chunks(10) {
        let page_ids = MessageId::page(chunk.len());
        let events = chunk
            .iter()
            .zip(&page_ids)
            .map(|(i, id)| delivered(*id, tenant, *i))
            .collect();
        out.push(Outgoing {
            body: Task::Page(PageTask::new(events).unwrap()).to_body(),
            delay: Duration::ZERO,
        });
        ids.extend(page_ids);
    }
    (ids, out)
}

/// Notes the errors the deliverer logs: a storage or queue fault after a request leaves
/// its answer unrecorded, and the request is made again once the lease runs out, as after
/// a crash.
struct FaultLog {
    faults: Arc<Mutex<Vec<(Instant, String)>>>,
}

struct Text(String);

impl tracing::field::Visit for Text {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl tracing::Subscriber for FaultLog {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() == tracing::Level::ERROR
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        self.faults.lock().unwrap().push((Instant::now(), text.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The queue as seen by the SQS event source.
struct Source {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

impl Source {
    /// One receive of up to 10, as SQS records of a Lambda event.
    async fn receive(&self, visibility: i32) -> Vec<SqsMessage> {
        records::receive(&self.sqs, &self.url, visibility).await
    }

    /// Messages in the queue: visible, in flight or delayed.
    async fn depth(&self) -> usize {
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        ]
        .iter()
        .map(|name| {
            attrs
                .get(name)
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
        })
        .sum()
    }

    /// Deletes the records an invocation handled, as the event source does with
    /// `ReportBatchItemFailures`: all but the failures. A receipt gone stale (the message
    /// was received again meanwhile) is the next receiver's to settle.
    async fn settle(&self, records: &[SqsMessage], failed: &HashSet<String>) {
        let _ =
            source::delete_handled(&self.sqs, &self.url, records, |id| failed.contains(id)).await;
    }
}

fn failures(response: &SqsBatchResponse) -> HashSet<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

/// What the pumps saw.
#[derive(Default)]
struct PumpStats {
    batches: AtomicUsize,
    duplicated: AtomicUsize,
    /// Records received while another invocation was still handling the same message.
    overlaps: AtomicUsize,
    /// Records an invocation reported as failed.
    failed_records: AtomicUsize,
    /// Records that were delayed copies of a message put off.
    copies: AtomicUsize,
}

/// The deliver function: its handler with the queues it is given.
struct Function {
    deliverer: Arc<Deliverer>,
    events: Arc<SqsQueue>,
    dead_letters: Arc<SqsQueue>,
}

impl Function {
    async fn invoke(&self, records: &[SqsMessage]) -> SqsBatchResponse {
        sqs::handle_batch(
            &self.deliverer,
            &self.events,
            &self.dead_letters,
            records::event_of(records.to_vec()),
        )
        .await
    }
}

async fn pump(
    source: Arc<Source>,
    function: Arc<Function>,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    stats: Arc<PumpStats>,
    last_busy: Arc<Mutex<Instant>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let records = source.receive(VISIBILITY_SECS).await;
        if records.is_empty() {
            continue;
        }
        stats.copies.fetch_add(
            records
                .iter()
                .filter(|r| r.message_attributes.contains_key(WAITS_ATTRIBUTE))
                .count(),
            Ordering::SeqCst,
        );
        *last_busy.lock().unwrap() = Instant::now();
        let ids: Vec<String> = records
            .iter()
            .map(|r| r.message_id.clone().unwrap_or_default())
            .collect();
        {
            let mut running = in_flight.lock().unwrap();
            for id in &ids {
                let n = running.entry(id.clone()).or_default();
                if *n > 0 {
                    stats.overlaps.fetch_add(1, Ordering::SeqCst);
                }
                *n += 1;
            }
        }
        let batch = stats.batches.fetch_add(1, Ordering::SeqCst);
        let responses = if batch % DUPLICATE_EVERY == 0 {
            stats.duplicated.fetch_add(1, Ordering::SeqCst);
            let (one, two) = tokio::join!(function.invoke(&records), function.invoke(&records));
            vec![one, two]
        } else {
            vec![function.invoke(&records).await]
        };
        for response in &responses {
            let failed = failures(response);
            stats
                .failed_records
                .fetch_add(failed.len(), Ordering::SeqCst);
            source.settle(&records, &failed).await;
        }
        {
            let mut running = in_flight.lock().unwrap();
            for id in &ids {
                if let Some(n) = running.get_mut(id) {
                    *n -= 1;
                }
            }
        }
        *last_busy.lock().unwrap() = Instant::now();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_hundred_events_settle_as_planned_through_duplicates_expiry_and_partial_failures() {
    let faults = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::set_global_default(FaultLog {
        faults: faults.clone(),
    })
    .unwrap();
    let sdk = moto_sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs_client = aws_sdk_sqs::Client::new(&sdk);
    let table = unique("hookline-chaos");
    create_table(&ddb, &table).await.unwrap();
    let (queue_url, dlq_url) = create_queue_pair(&sqs_client, &unique("hookline-chaos"))
        .await
        .unwrap();
    let store: SharedStore = Arc::new(DynamoStore::new(ddb, table));
    let queue = Arc::new(SqsQueue::new(sqs_client.clone(), queue_url.clone()));
    let dead_letters = Arc::new(SqsQueue::new(sqs_client.clone(), dlq_url.clone()));
    let source = Arc::new(Source {
        sqs: sqs_client.clone(),
        url: queue_url.clone(),
    });

    let plan: Plan = Arc::new(|endpoint, webhook_id, n| {
        Scenario::of(MOTO_SCENARIOS, endpoint, webhook_id).answer(n)
    });
    let receiver = FaultyReceiver::start(plan, Duration::from_secs(10)).await;
    let (tenant, _) = stored_tenant(store.as_ref(), None).await;
    let mut path_of: HashMap<EndpointId, &str> = HashMap::new();
    for path in PATHS {
        let e = endpoint_to(tenant, &receiver.url(path), None);
        store.create_endpoint(&e, 1_000).await.unwrap();
        path_of.insert(e.id, path);
    }
    let endpoint_a = *path_of.iter().find(|(_, p)| **p == "/a").unwrap().0;
    let deliverer = Arc::new(deliverer(store.clone(), queue.clone()));
    let mut ids = Vec::new();

    // A batch of ten, three of whose messages another worker stored (its lease on their
    // first attempts over) and one of whose deliveries it holds right now: the response
    // names exactly those three records (put off by their visibility).
    let mut first = Vec::new();
    for i in 0..10 {
        let (id, out) = event_task(tenant, i);
        ids.push(id);
        first.push(out);
    }
    let held: Vec<MessageId> = vec![ids[1], ids[4], ids[8]];
    let targets: Vec<EndpointId> = path_of.keys().copied().collect();
    for out in &first {
        let Ok(Task::Event(task)) = Task::parse(&out.body, origin()) else {
            panic!("an event task");
        };
        if held.contains(&task.id) {
            store
                .insert_message(&Message {
                    id: task.id,
                    tenant,
                    publisher: None,
                    domain: None,
                    event_type: task.event_type,
                    payload: task.payload,
                    idempotency_key: None,
                    received_at: task.received_at,
                    targets: targets.clone(),
                })
                .await
                .unwrap();
        }
    }
    queue.send(first).await.unwrap();
    let lease_until = now_ms() + 3_000;
    for id in &held {
        let fresh = Delivery::fresh(*id, endpoint_a, tenant, now_ms());
        assert!(store
            .claim_delivery(&fresh, 0, now_ms(), lease_until)
            .await
            .unwrap());
    }
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while records.len() < 10 {
        assert!(Instant::now() < deadline, "the first batch never arrived");
        // Hidden long enough that nothing comes back while this batch is handled.
        records.extend(source.receive(10).await);
    }
    let id_of_record: HashMap<String, MessageId> = records
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
            let id: MessageId = body["id"].as_str().unwrap().parse().unwrap();
            (r.message_id.clone().unwrap(), id)
        })
        .collect();
    let function = Arc::new(Function {
        deliverer: deliverer.clone(),
        events: queue.clone(),
        dead_letters: dead_letters.clone(),
    });
    let response = function.invoke(&records).await;
    let failed = failures(&response);
    let expected: HashSet<String> = id_of_record
        .iter()
        .filter(|(_, id)| held.contains(id))
        .map(|(record, _)| record.clone())
        .collect();
    assert_eq!(
        failed, expected,
        "the batch response names the held records only"
    );
    source.settle(&records, &failed).await;

    // The rest, pumped by concurrent invocations with a short visibility timeout: a
    // third one by one, the others in pages.
    let mut rest = Vec::new();
    for i in 10..40 {
        let (id, out) = event_task(tenant, i);
        ids.push(id);
        rest.push(out);
    }
    let (paged, pages) = page_tasks(tenant, 40, EVENTS);
    ids.extend(paged);
    rest.extend(pages);
    queue.send(rest).await.unwrap();
    let stats = Arc::new(PumpStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let last_busy = Arc::new(Mutex::new(Instant::now()));
    let in_flight = Arc::new(Mutex::new(HashMap::new()));
    let pumps: Vec<_> = (0..INVOCATIONS)
        .map(|_| {
            tokio::spawn(pump(
                source.clone(),
                function.clone(),
                in_flight.clone(),
                stats.clone(),
                last_busy.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // Settled: the queue empty and the pumps idle for a while; then every delivery final.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut outcome: HashMap<(MessageId, EndpointId), Delivery> = HashMap::new();
    let dead_source = Source {
        sqs: sqs_client.clone(),
        url: dlq_url.clone(),
    };
    loop {
        if Instant::now() > deadline {
            panic!(
                "deliveries never settled: {} of {} final, {} messages queued, {} dead-lettered, \
                 {} faults logged",
                outcome.len(),
                ids.len() * PATHS.len(),
                source.depth().await,
                dead_source.depth().await,
                faults.lock().unwrap().len()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if last_busy.lock().unwrap().elapsed() < Duration::from_secs(3) || source.depth().await > 0
        {
            continue;
        }
        let mut pending = 0;
        for id in &ids {
            for endpoint in path_of.keys() {
                if outcome.contains_key(&(*id, *endpoint)) {
                    continue;
                }
                match store.get_delivery(*id, *endpoint).await.unwrap() {
                    Some(d) if d.status.is_final() => {
                        outcome.insert((*id, *endpoint), d);
                    }
                    _ => pending += 1,
                }
            }
        }
        if pending == 0 {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for p in pumps {
        p.await.unwrap();
    }

    // The checks of the local suite, on what the store holds. Faults stand where kills
    // stand there: the only reason an answer may go unrecorded.
    let faults: Vec<(Instant, String)> = faults.lock().unwrap().clone();
    let windows: Vec<Kill> = faults
        .iter()
        .map(|(at, _)| Kill {
            phase: "storage or queue fault",
            sent: *at,
            died: *at,
            back: *at,
        })
        .collect();
    let seen = receiver.seen();
    let mut by_pair: HashMap<(String, String), Vec<faulty::Seen>> = HashMap::new();
    for s in &seen {
        by_pair
            .entry((s.endpoint.clone(), s.webhook_id.clone()))
            .or_default()
            .push(s.clone());
    }
    let mut failures_found = Vec::new();
    let mut tally = Tally::default();
    let empty = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let attempts = store.list_attempts(tenant, *id).await.unwrap();
        for (endpoint, path) in &path_of {
            let d = &outcome[&(*id, *endpoint)];
            let delivery = json!({
                "status": d.status.as_str(),
                "attempts": d.attempts,
                "last_status_code": d.last_status_code,
            });
            let mut mine: Vec<serde_json::Value> = attempts
                .iter()
                .filter(|a| a.endpoint == *endpoint)
                .map(|a| {
                    json!({
                        "attempt": a.number,
                        "status_code": a.status_code,
                        "error": a.error,
                    })
                })
                .collect();
            mine.sort_by_key(|a| a["attempt"].as_u64());
            let mine: Vec<&serde_json::Value> = mine.iter().collect();
            let got = by_pair
                .get(&(path.to_string(), id.to_string()))
                .unwrap_or(&empty);
            let scenario = Scenario::of(MOTO_SCENARIOS, path, &id.to_string());
            check_pair(
                &mut failures_found,
                &mut tally,
                &windows,
                &format!("event {i} {id} {path}"),
                Some(scenario),
                &delivery,
                &mine,
                got,
            );
        }
    }
    let known: HashSet<String> = ids.iter().map(|id| id.to_string()).collect();
    if by_pair.keys().any(|(_, id)| !known.contains(id)) {
        failures_found.push("requests for unknown messages".into());
    }
    if receiver.trap_hits() > 0 {
        failures_found.push(format!("{} redirects were followed", receiver.trap_hits()));
    }
    let parked = sqs_client
        .receive_message()
        .queue_url(&dlq_url)
        .wait_time_seconds(0)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    if !parked.is_empty() {
        failures_found.push(format!("{} messages were dead-lettered", parked.len()));
    }
    println!(
        "chaos on moto: {} pairs ({} to succeed, {} to fail), {} requests, {} batches, {} \
         handed to two invocations, {} records received while still in hand, {} records \
         reported failed, {} delayed copies; timeouts on answered requests {}, requests after a 2xx that timed \
         out {}",
        tally.pairs,
        tally.succeeded,
        tally.failed,
        seen.len(),
        stats.batches.load(Ordering::SeqCst),
        stats.duplicated.load(Ordering::SeqCst),
        stats.overlaps.load(Ordering::SeqCst),
        stats.failed_records.load(Ordering::SeqCst),
        stats.copies.load(Ordering::SeqCst),
        tally.timeouts_answered,
        tally.after_success_timeout,
    );
    println!(
        "chaos on moto: {} storage or queue faults logged, answers they left unrecorded {:?}",
        faults.len(),
        tally.lost_by_kill
    );
    for (_, text) in faults.iter().take(5) {
        println!("chaos on moto: fault {text}");
    }
    println!("chaos on moto: scenarios {:?}", tally.by_scenario);
    assert!(
        failures_found.is_empty(),
        "{} failures, the first ones:\n{}",
        failures_found.len(),
        failures_found
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(tally.pairs, EVENTS * PATHS.len());
    // The troubles this suite is about really happened.
    assert!(stats.duplicated.load(Ordering::SeqCst) > 0);
    assert!(
        stats.overlaps.load(Ordering::SeqCst) > 0,
        "no message came back while still being handled"
    );
    assert!(
        tally.by_scenario.keys().any(|s| s.starts_with("LateOk")),
        "no late answer: no visibility timeout ran out mid-delivery"
    );
}
