//! Local mode under faults: 10,000 events published in batches to the real binary, each
//! fanned out to three endpoints on a receiver that fails in every way it can (statuses,
//! 429 with `Retry-After`, hangs, resets, bodies cut short, redirects, slow huge bodies),
//! while the process is killed with SIGKILL at random points of publishing and delivery and
//! restarted on the same data file. Afterwards every (message, endpoint) pair is checked
//! against the plan, the receiver's log and the attempt log.
//!
//! 410 disables an endpoint, which would make later pairs of that endpoint unknowable, so
//! it is kept off the three main endpoints: a fourth endpoint takes only the `complained`
//! events (one in a thousand) and answers 410 to all of them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::faulty::{Answer, FaultyReceiver, Plan, Seen};
use crate::verify::{check_pair, Kill, Scenario, Tally, SCENARIOS};

const OPERATOR_KEY: &str = "hkop_chaos-operator-key";
const EVENTS: usize = 10_000;
/// Events per publish request, and publish requests in flight at once.
const BATCH: usize = 100;
const PUBLISHERS: usize = 4;
const SCHEDULE: &str = "0s,100ms,200ms,400ms";
const REQUEST_TIMEOUT: &str = "1s";
const MAIN: [&str; 3] = ["/a", "/b", "/c"];
const GONE: &str = "/gone";
/// Event types of the main events; every thousandth event is `complained` (also to /gone).
const TYPES: [&str; 4] = ["delivered", "opened", "clicked", "accepted"];
/// Requests in flight in the worker at once: the most answers one kill can lose.
fn worker_concurrency() -> usize {
    hookline_deliver::worker::WorkerOptions::default().concurrency
}

fn plan() -> Plan {
    Arc::new(|endpoint, webhook_id, n| {
        if endpoint == GONE {
            Answer::Status(410)
        } else {
            Scenario::of(SCENARIOS, endpoint, webhook_id).answer(n)
        }
    })
}

// ---- the process -------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the real binary and waits until it answers.
async fn launch(data: &Path, log: &Path, port: u16) -> Child {
    let log_file = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .env("HOOKLINE_LISTEN", format!("127.0.0.1:{port}"))
        .env("HOOKLINE_DATA", data)
        .env("HOOKLINE_OPERATOR_KEY", OPERATOR_KEY)
        .env("HOOKLINE_ALLOW_HTTP", "true")
        .env("HOOKLINE_ALLOWED_NETWORKS", "127.0.0.1/32")
        .env("HOOKLINE_RETRY_SCHEDULE", SCHEDULE)
        .env("HOOKLINE_REQUEST_TIMEOUT", REQUEST_TIMEOUT)
        // Endpoints failing for a while must not be disabled mid-run.
        .env("HOOKLINE_DISABLE_AFTER", "off")
        .env("HOOKLINE_LOG", "warn")
        .stdout(Stdio::from(log_file()))
        .stderr(Stdio::from(log_file()))
        .spawn()
        .expect("the hookline binary starts");
    let url = format!("http://127.0.0.1:{port}/v1/event-types");
    hookline_core::client::install_crypto_provider();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(&url).send().await.is_err() {
        assert!(Instant::now() < deadline, "hookline did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
}

struct Life {
    child: Child,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    kills: Vec<Kill>,
}

impl Life {
    async fn kill_and_restart(&mut self, phase: &'static str, pause: Duration) {
        let sent = Instant::now();
        // Child::kill sends SIGKILL on Unix: no shutdown code runs.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let died = Instant::now();
        tokio::time::sleep(pause).await;
        self.child = launch(&self.data, &self.log, self.port).await;
        self.kills.push(Kill {
            phase,
            sent,
            died,
            back: Instant::now(),
        });
    }
}

// ---- publishing --------------------------------------------------------------------------

fn event(i: usize) -> Value {
    let event_type = if i % 1000 == 999 {
        "complained"
    } else {
        TYPES[i % TYPES.len()]
    };
    json!({
        "type": event_type,
        "idempotency_key": format!("chaos-{i}"),
        "payload": {"event": event_type, "i": i, "recipient": format!("user{i}@example.com")},
    })
}

struct Publishing {
    base: String,
    key: String,
    client: reqwest::Client,
    next: AtomicUsize,
    done: AtomicUsize,
    /// Requests sent again after a connection error or a 5xx.
    retries: AtomicUsize,
    ids: Mutex<Vec<Option<String>>>,
}

impl Publishing {
    /// Publishes batch `b` until it gets a 202, through kills; returns its ids.
    async fn publish_batch(&self, b: usize) -> Vec<String> {
        let events: Vec<Value> = (b * BATCH..(b + 1) * BATCH).map(event).collect();
        let body = json!({ "events": events });
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let sent = self
                .client
                .post(format!("{}/v1/events", self.base))
                .bearer_auth(&self.key)
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status() == 202 => {
                    if let Ok(v) = resp.json::<Value>().await {
                        return v["ids"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|id| id.as_str().unwrap().to_string())
                            .collect();
                    }
                    // Cut while reading the answer: the same keys give the same ids.
                }
                Ok(resp) if resp.status().is_client_error() => {
                    panic!(
                        "batch {b} refused: {}",
                        resp.text().await.unwrap_or_default()
                    )
                }
                Ok(_) | Err(_) => {}
            }
            assert!(Instant::now() < deadline, "batch {b} never got a 202");
            self.retries.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn run(self: Arc<Self>) {
        loop {
            let b = self.next.fetch_add(1, Ordering::SeqCst);
            if b >= EVENTS / BATCH {
                return;
            }
            let ids = self.publish_batch(b).await;
            assert_eq!(ids.len(), BATCH);
            let mut all = self.ids.lock().unwrap();
            for (j, id) in ids.into_iter().enumerate() {
                all[b * BATCH + j] = Some(id);
            }
            drop(all);
            self.done.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn wait_until(within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---- reading the outcome -----------------------------------------------------------------

struct Api {
    base: String,
    key: String,
    client: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("the API answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The message and its attempts once it is stored and settled; else what there is.
    async fn settled(&self, id: &str) -> Result<(Value, Value), Value> {
        let (status, message) = self.get(&format!("/v1/messages/{id}")).await;
        if status == 404 {
            return Err(message);
        }
        assert_eq!(status, 200, "{message}");
        let pending = message["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["status"] == "pending");
        if pending {
            return Err(message);
        }
        let (status, attempts) = self.get(&format!("/v1/messages/{id}/attempts")).await;
        assert_eq!(status, 200, "{attempts}");
        Ok((message, attempts))
    }

    /// Reads every message once it has settled. Those still unsettled after `within` come
    /// back apart, with what the API last said of them.
    async fn read_all(
        self: &Arc<Self>,
        ids: &[String],
        within: Duration,
    ) -> (HashMap<String, (Value, Value)>, Vec<(String, Value)>) {
        let deadline = Instant::now() + within;
        let mut out = HashMap::new();
        let mut todo: Vec<String> = ids.to_vec();
        loop {
            let queue = Arc::new(Mutex::new(std::mem::take(&mut todo)));
            let results = Arc::new(Mutex::new(Vec::new()));
            let mut readers = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let (api, queue, results) = (self.clone(), queue.clone(), results.clone());
                readers.spawn(async move {
                    loop {
                        let Some(id) = queue.lock().unwrap().pop() else {
                            return;
                        };
                        let got = api.settled(&id).await;
                        results.lock().unwrap().push((id, got));
                    }
                });
            }
            while let Some(r) = readers.join_next().await {
                r.unwrap();
            }
            let mut unsettled = Vec::new();
            for (id, got) in std::mem::take(&mut *results.lock().unwrap()) {
                match got {
                    Ok(v) => {
                        out.insert(id, v);
                    }
                    Err(last) => unsettled.push((id, last)),
                }
            }
            if unsettled.is_empty() || Instant::now() >= deadline {
                return (out, unsettled);
            }
            todo = unsettled.into_iter().map(|(id, _)| id).collect();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

// ---- the suite ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_to_three_endpoints_settle_as_planned_through_faults_and_kill_9() {
    let started = Instant::now();
    let seed = std::env::var("HOOKLINE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random::<u64>());
    println!("chaos seed {seed} (set HOOKLINE_CHAOS_SEED to replay the kill points)");
    let mut rng = StdRng::seed_from_u64(seed);

    let receiver = FaultyReceiver::start(plan(), Duration::from_secs(10)).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("hookline.db");
    let log = dir.path().join("hookline.log");
    let child = launch(&data, &log, port).await;
    let mut life = Life {
        child,
        data,
        log: log.clone(),
        port,
        kills: Vec::new(),
    };

    hookline_core::client::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let created = client
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(OPERATOR_KEY)
        .json(&json!({"name": "chaos"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let key = created.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut endpoint_path = HashMap::new();
    let formats = ["raw", "envelope", "mailgun"];
    let mut specs: Vec<(&str, Value)> = MAIN
        .iter()
        .zip(formats)
        .map(|(p, f)| (*p, json!({"url": receiver.url(p), "format": f})))
        .collect();
    specs.push((
        GONE,
        json!({"url": receiver.url(GONE), "event_types": ["complained"]}),
    ));
    for (path, spec) in specs {
        let resp = client
            .post(format!("{base}/v1/endpoints"))
            .bearer_auth(&key)
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let id = resp.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        endpoint_path.insert(id, path);
    }

    // Publish, and kill twice while publishing.
    let publishing = Arc::new(Publishing {
        base: base.clone(),
        key: key.clone(),
        client: client.clone(),
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        retries: AtomicUsize::new(0),
        ids: Mutex::new(vec![None; EVENTS]),
    });
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|_| tokio::spawn(publishing.clone().run()))
        .collect();
    let batches = EVENTS / BATCH;
    for (phase, range) in [
        ("publishing", batches / 10..batches * 4 / 10),
        ("publishing", batches / 2..batches * 8 / 10),
    ] {
        let at = rng.random_range(range);
        wait_until(Duration::from_secs(120), || {
            publishing.done.load(Ordering::SeqCst) >= at
        })
        .await;
        let pause = Duration::from_millis(rng.random_range(0..300));
        life.kill_and_restart(phase, pause).await;
    }
    for p in publishers {
        p.await.unwrap();
    }
    let published_in = started.elapsed();
    let ids: Vec<String> = publishing
        .ids
        .lock()
        .unwrap()
        .iter()
        .map(|id| id.clone().expect("every batch got a 202"))
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), EVENTS, "every event has its own message");

    // Kill twice more while delivering, at random shares of the requests the plan makes
    // without kills.
    let planned: usize = ids
        .iter()
        .flat_map(|id| {
            MAIN.iter()
                .map(move |p| Scenario::of(SCENARIOS, p, id).attempts() as usize)
        })
        .sum();
    for range in [0.45..0.7, 0.75..0.95] {
        let at = (planned as f64 * rng.random_range(range)) as usize;
        wait_until(Duration::from_secs(120), || receiver.count() >= at).await;
        let pause = Duration::from_millis(rng.random_range(0..300));
        life.kill_and_restart("delivering", pause).await;
    }

    // Let everything settle: the receiver quiet for a while, then every message final.
    let mut last = (receiver.count(), Instant::now());
    let settle_deadline = Instant::now() + Duration::from_secs(180);
    while last.1.elapsed() < Duration::from_secs(3) || receiver.open_requests() > 0 {
        assert!(Instant::now() < settle_deadline, "deliveries never settled");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = receiver.count();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let delivered_in = started.elapsed();
    let api = Arc::new(Api {
        base: base.clone(),
        key: key.clone(),
        client: client.clone(),
    });
    let (outcome, unsettled) = api.read_all(&ids, Duration::from_secs(60)).await;
    let read_in = started.elapsed();

    // Publishing again with the same keys gives the same ids and sends nothing.
    let before = receiver.count();
    for b in 0..batches {
        let again = publishing.publish_batch(b).await;
        assert_eq!(
            again,
            ids[b * BATCH..(b + 1) * BATCH],
            "batch {b} published again"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.count(),
        before,
        "a repeated publish was delivered again"
    );

    // ---- checks ----
    let seen = receiver.seen();
    let mut by_pair: HashMap<(String, String), Vec<Seen>> = HashMap::new();
    for s in &seen {
        by_pair
            .entry((s.endpoint.clone(), s.webhook_id.clone()))
            .or_default()
            .push(s.clone());
    }
    let known: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut failures: Vec<String> = unsettled
        .iter()
        .map(|(id, last)| format!("{id} never settled: {last}"))
        .collect();
    let stray: Vec<_> = by_pair
        .keys()
        .filter(|(_, id)| !known.contains(id.as_str()))
        .collect();
    if !stray.is_empty() {
        failures.push(format!("requests for unknown messages: {stray:?}"));
    }
    if receiver.trap_hits() > 0 {
        failures.push(format!("{} redirects were followed", receiver.trap_hits()));
    }
    let mut tally = Tally::default();
    let empty = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let Some((message, attempts)) = outcome.get(id) else {
            continue;
        };
        let deliveries = message["deliveries"].as_array().unwrap();
        let attempts = attempts["data"].as_array().unwrap();
        let complained = i % 1000 == 999;
        let mut targeted: Vec<&str> = Vec::new();
        for d in deliveries {
            let endpoint = d["endpoint_id"].as_str().unwrap();
            let path = endpoint_path[endpoint];
            targeted.push(path);
            let mut mine: Vec<&Value> = attempts
                .iter()
                .filter(|a| a["endpoint_id"] == endpoint)
                .collect();
            mine.sort_by_key(|a| a["attempt"].as_u64());
            let got = by_pair
                .get(&(path.to_string(), id.clone()))
                .unwrap_or(&empty);
            let label = format!("event {i} {id} {path}");
            if path == GONE {
                if !complained {
                    failures.push(format!("{label}: not a complained event"));
                }
                check_pair(
                    &mut failures,
                    &mut tally,
                    &life.kills,
                    &label,
                    None,
                    d,
                    &mine,
                    got,
                );
                match (d["status"].as_str(), mine.len()) {
                    (Some("failed"), 0) if d["last_error"] == "endpoint_disabled" => {
                        tally.gone_settled_unsent += 1
                    }
                    (Some("failed"), 1) if mine[0]["status_code"] == 410 => {
                        tally.gone_attempted += 1
                    }
                    _ => failures.push(format!("{label}: unexpected {d} {mine:?}")),
                }
            } else {
                let scenario = Scenario::of(SCENARIOS, path, id);
                check_pair(
                    &mut failures,
                    &mut tally,
                    &life.kills,
                    &label,
                    Some(scenario),
                    d,
                    &mine,
                    got,
                );
            }
        }
        targeted.sort();
        let mut expected: Vec<&str> = MAIN.to_vec();
        if complained && !targeted.contains(&GONE) {
            tally.gone_untargeted += 1;
        } else if complained {
            expected.push(GONE);
            expected.sort();
        }
        if targeted != expected {
            failures.push(format!("event {i} {id}: targets {targeted:?}"));
        }
    }
    if tally.gone_attempted == 0 {
        failures.push("no request to the 410 endpoint was recorded".into());
    }
    let endpoints = api.get("/v1/endpoints").await.1;
    for e in endpoints["data"].as_array().unwrap() {
        let path = endpoint_path[e["id"].as_str().unwrap()];
        let expected = if path == GONE { "disabled" } else { "active" };
        if e["status"] != expected {
            failures.push(format!(
                "endpoint {path} is {}, expected {expected}",
                e["status"]
            ));
        }
    }
    // Each kind of answer but `Late` (which this suite's short timeout would turn into
    // a hang) was really given.
    let kinds: HashSet<std::mem::Discriminant<Answer>> = seen
        .iter()
        .map(|s| std::mem::discriminant(&s.answer))
        .collect();
    if kinds.len() != 7 {
        failures.push(format!("only {} kinds of answers were given", kinds.len()));
    }
    let limit = worker_concurrency();
    for (kill, lost) in &tally.lost_by_kill {
        if *lost > limit {
            failures.push(format!(
                "kill {kill} lost {lost} answers, more than {limit}"
            ));
        }
    }

    println!(
        "chaos: {} events, {} pairs ({} to succeed, {} to fail), {} requests seen, \
         {} publish retries, kills {:?}",
        EVENTS,
        tally.pairs,
        tally.succeeded,
        tally.failed,
        seen.len(),
        publishing.retries.load(Ordering::SeqCst),
        life.kills
            .iter()
            .map(|k| format!("{} (down {:?})", k.phase, k.back - k.died))
            .collect::<Vec<_>>(),
    );
    println!(
        "chaos: answers lost per kill {:?}; requests after a 2xx: {} (kill), {} (timeout); \
         timeouts on answered requests {}, on unseen ones {}, outcomes changed by them {}; \
         410 endpoint: {} attempted, {} settled unsent, {} untargeted",
        tally.lost_by_kill,
        tally.after_success_kill,
        tally.after_success_timeout,
        tally.timeouts_answered,
        tally.timeouts_unseen,
        tally.outcome_changed_by_timeouts,
        tally.gone_attempted,
        tally.gone_settled_unsent,
        tally.gone_untargeted
    );
    println!("chaos: scenarios {:?}", tally.by_scenario);
    println!(
        "chaos: published in {published_in:?}, settled in {delivered_in:?}, read in {read_in:?}"
    );
    life.child.kill().unwrap();
    life.child.wait().unwrap();
    if !failures.is_empty() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        for line in tail.iter().rev() {
            println!("hookline log: {line}");
        }
        println!("data and log kept in {}", dir.keep().display());
        panic!(
            "{} failures, the first ones:\n{}",
            failures.len(),
            failures
                .iter()
                .take(40)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
