//! Local mode under load: the real binary as a child process on a temporary data file, a
//! loopback receiver behind N endpoints, and a publisher at a fixed rate or as fast as
//! the service accepts. Measures acceptance and delivery rates, publish-to-delivery
//! latency, the CPU time per event of the service, the publisher and the receiver (and the
//! rate they bound on this machine's cores), peak memory, disk bytes per delivery, and the
//! data file's size through the run (which levels off under a retention).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::procstat;
use crate::receiver::{self, Receiver};

pub(crate) const OPERATOR_KEY: &str = "hkop_bench-operator-key-0123456789abcdef";
/// Open-loop publishing gives up a tick (and counts it) beyond this many requests in flight.
const MAX_IN_FLIGHT: usize = 4096;

/// How fast to publish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// As fast as the service accepts, from a fixed number of publishers.
    Max,
    /// A fixed number of events per second, whatever the answers.
    PerSecond(u32),
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "max" => Ok(Rate::Max),
            n => n
                .parse::<u32>()
                .ok()
                .filter(|r| *r > 0)
                .map(Rate::PerSecond)
                .ok_or_else(|| format!("{s:?} is neither `max` nor a positive number of events/s")),
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Max => write!(f, "max"),
            Rate::PerSecond(r) => write!(f, "{r}/s"),
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct LocalArgs {
    /// The local-mode binary to run.
    #[arg(long, default_value = "target/release/hookline")]
    pub binary: PathBuf,
    /// Endpoints registered, every one subscribed to every event.
    #[arg(long, default_value_t = 1)]
    pub endpoints: usize,
    /// Publish rates, each run on a fresh process and data file: events/s, or `max`.
    #[arg(long, value_delimiter = ',', default_value = "max")]
    pub rate: Vec<Rate>,
    /// Seconds of publishing per rate.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Publishers (each one request at a time) at rate `max`.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Longest wait, in seconds, for the backlog after publishing stops.
    #[arg(long, default_value_t = 180.0)]
    pub drain: f64,
    /// The service's log filter (`HOOKLINE_LOG`); its log goes to a file.
    #[arg(long, default_value = "info")]
    pub log: String,
    /// A retention for the run (`HOOKLINE_RETENTION`, a duration such as `20s`); without
    /// it the service keeps its default of 30 days, so nothing is deleted during a run.
    /// With it, the run also waits after the drain for the log to empty.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,
    /// Metrics on or off for each run (`HOOKLINE_METRICS`), in turn for every rate:
    /// `on,off,on,off` alternates them, so that what the machine does meanwhile weighs on
    /// both alike; the table then ends with the throughput ratio of on to off.
    #[arg(long, value_delimiter = ',', default_value = "on", value_parser = on_off)]
    pub metrics: Vec<bool>,
    /// Also write the results here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn on_off(value: &str) -> Result<bool, String> {
    match value.trim() {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("{other:?} is neither on nor off")),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalResult {
    pub rate: String,
    pub endpoints: usize,
    /// Whether the service recorded metrics (`HOOKLINE_METRICS`).
    pub metrics: bool,
    pub duration_s: f64,
    /// Publish requests sent, and those answered 202.
    pub published: u64,
    pub accepted: u64,
    pub accepted_per_s: f64,
    /// Ticks of a fixed rate dropped because too many requests were in flight.
    pub skipped_ticks: u64,
    /// Publishes answered 503 because too many events were waiting for delivery.
    pub turned_away: u64,
    pub deliveries_expected: u64,
    pub deliveries: u64,
    /// Deliveries per second while publishing, after the first tenth of the run.
    pub deliveries_per_s_sustained: f64,
    /// All deliveries over the time from the first publish to the last delivery.
    pub deliveries_per_s_overall: f64,
    /// Seconds from the end of publishing until the last delivery.
    pub drain_s: f64,
    pub all_delivered: bool,
    pub latency: Latency,
    pub cpu_s: f64,
    pub cpu_cores: f64,
    pub cpu_ms_per_1000_deliveries: f64,
    pub peak_rss_mib: f64,
    pub disk_bytes: u64,
    pub disk_bytes_per_delivery: f64,
    /// CPU used by this benchmark process (publisher and receiver) on the same machine.
    pub bench_cpu_s: f64,
    /// The CPU time of the three processes per accepted event and per delivery, and the
    /// rate they bound on this machine.
    pub cpu_split: CpuSplit,
    /// `HOOKLINE_RETENTION` of the run, if one was set (e.g. `20s`).
    pub retention: Option<String>,
    /// The data file and its WAL, once a second from the first publish.
    pub disk_samples: Vec<DiskSample>,
    /// The data file's size at a quarter, half, three quarters and the end of publishing.
    pub db_bytes_by_quarter: [u64; 4],
    /// With a retention: the messages still in the log after the drain and a wait for the
    /// sweeper (until none is left, up to the retention and 30 s more).
    pub messages_left: Option<u64>,
}

/// Where the CPU of a run went, per accepted event (with its whole fan-out) and per
/// delivery: the service, the publisher (the benchmark process less its receiver threads)
/// and the receiver. The three share the machine's cores, so at most
/// `cores / total_us_per_event` events per second can be accepted and delivered, however
/// the work is spread: the bound the measured rates are held against.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct CpuSplit {
    pub service_cpu_s: f64,
    pub publisher_cpu_s: f64,
    pub receiver_cpu_s: f64,
    pub service_us_per_event: f64,
    pub publisher_us_per_event: f64,
    pub receiver_us_per_event: f64,
    pub total_us_per_event: f64,
    pub service_us_per_delivery: f64,
    pub receiver_us_per_delivery: f64,
    /// `std::thread::available_parallelism` of the machine.
    pub cores: usize,
    /// `cores` CPU-seconds per second over the CPU-seconds one event costs.
    pub bound_events_per_s: f64,
    /// The same bound in deliveries (events times endpoints).
    pub bound_deliveries_per_s: f64,
    /// The accepted rate measured, as a share of the bound.
    pub accepted_share_of_bound: f64,
}

impl CpuSplit {
    /// The split of one run: the CPU seconds of each process, the events accepted and the
    /// deliveries made, on `cores` cores, at `accepted_per_s`.
    pub fn of(
        cpu_s: [f64; 3],
        accepted: u64,
        deliveries: u64,
        endpoints: usize,
        cores: usize,
        accepted_per_s: f64,
    ) -> Self {
        let [service, publisher, receiver] = cpu_s;
        let per = |cpu: f64, n: u64| if n == 0 { 0.0 } else { cpu * 1e6 / n as f64 };
        let total = per(service + publisher + receiver, accepted);
        let bound = if total > 0.0 {
            cores as f64 * 1e6 / total
        } else {
            0.0
        };
        CpuSplit {
            service_cpu_s: service,
            publisher_cpu_s: publisher,
            receiver_cpu_s: receiver,
            service_us_per_event: per(service, accepted),
            publisher_us_per_event: per(publisher, accepted),
            receiver_us_per_event: per(receiver, accepted),
            total_us_per_event: total,
            service_us_per_delivery: per(service, deliveries),
            receiver_us_per_delivery: per(receiver, deliveries),
            cores,
            bound_events_per_s: bound,
            bound_deliveries_per_s: bound * endpoints as f64,
            accepted_share_of_bound: if bound > 0.0 {
                accepted_per_s / bound
            } else {
                0.0
            },
        }
    }
}

/// The size of the data file and of its WAL at one moment.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DiskSample {
    /// Seconds since the first publish.
    pub t_s: f64,
    pub db_bytes: u64,
    pub wal_bytes: u64,
}

/// Runs every rate of `args` in turn.
pub async fn run(args: &LocalArgs) -> anyhow::Result<Vec<LocalResult>> {
    let mut results = Vec::new();
    for rate in &args.rate {
        for &metrics in &args.metrics {
            let setting = if metrics { "on" } else { "off" };
            eprintln!(
                "local: {rate}, {} endpoint(s), metrics {setting}, {} s ...",
                args.endpoints, args.duration
            );
            let result = run_one(args, *rate, metrics).await?;
            eprintln!(
                "local: {rate}: {:.0} accepted/s, {:.0} deliveries/s, p99 {:.1} ms, {} turned away",
                result.accepted_per_s,
                result.deliveries_per_s_sustained,
                result.latency.p99_ms,
                result.turned_away
            );
            results.push(result);
        }
    }
    Ok(results)
}

/// The service as a child process, stopped when dropped.
pub(crate) struct Service {
    child: Child,
    pid: u32,
    pub(crate) base: String,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Service {
    pub(crate) async fn spawn(
        binary: &Path,
        log: &str,
        retention: Option<Duration>,
        metrics: bool,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("hookline.db");
        let port = free_port()?;
        let log_file = std::fs::File::create(dir.path().join("hookline.log"))?;
        let mut command = Command::new(binary);
        if let Some(retention) = retention {
            command.env(
                "HOOKLINE_RETENTION",
                humantime::format_duration(retention).to_string(),
            );
        }
        let child = command
            .env("HOOKLINE_LISTEN", format!("127.0.0.1:{port}"))
            .env("HOOKLINE_DATA", &data)
            .env("HOOKLINE_OPERATOR_KEY", OPERATOR_KEY)
            .env("HOOKLINE_ALLOW_HTTP", "true")
            .env("HOOKLINE_ALLOWED_NETWORKS", "127.0.0.1/32")
            .env("HOOKLINE_LOG", log)
            .env("HOOKLINE_METRICS", if metrics { "on" } else { "off" })
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("no pid")?;
        let mut service = Service {
            child,
            pid,
            base: format!("http://127.0.0.1:{port}"),
            data,
            _dir: dir,
        };
        service.wait_ready().await?;
        Ok(service)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("hookline exited at start: {status}");
            }
            let ready = client
                .get(format!("{}/v1/event-types", self.base))
                .bearer_auth(OPERATOR_KEY)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("hookline did not answer within 30 s")
    }

    fn disk_bytes(&self) -> u64 {
        let (db, wal) = file_sizes(&self.data);
        db + wal
    }

    pub(crate) async fn stop(mut self) {
        // SAFETY: signals our own child by its pid.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The sizes of a data file and of its WAL.
fn file_sizes(data: &Path) -> (u64, u64) {
    let size = |suffix: &str| {
        let mut path = data.to_path_buf().into_os_string();
        path.push(suffix);
        std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
    };
    (size(""), size("-wal"))
}

/// Notes the data file's size once a second until aborted.
fn sample_disk(data: PathBuf, start: Instant) -> (Arc<Mutex<Vec<DiskSample>>>, JoinHandle<()>) {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let out = samples.clone();
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            ticks.tick().await;
            let (db_bytes, wal_bytes) = file_sizes(&data);
            out.lock().expect("disk samples").push(DiskSample {
                t_s: start.elapsed().as_secs_f64(),
                db_bytes,
                wal_bytes,
            });
        }
    });
    (samples, task)
}

/// The messages in the tenant's log, counted page by page.
pub(crate) async fn count_messages(
    client: &reqwest::Client,
    base: &str,
    key: &str,
) -> anyhow::Result<u64> {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/messages?limit=250");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client
            .get(url)
            .bearer_auth(key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        count += page["data"].as_array().map_or(0, |d| d.len() as u64);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok(count),
        }
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) async fn setup(
    client: &reqwest::Client,
    base: &str,
    receiver: &str,
    n: usize,
) -> anyhow::Result<String> {
    let tenant: Value = client
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(OPERATOR_KEY)
        .json(&json!({"name": "bench"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let key = tenant["api_key"]
        .as_str()
        .context("no api_key in the tenant")?
        .to_string();
    for i in 0..n {
        client
            .post(format!("{base}/v1/endpoints"))
            .bearer_auth(&key)
            .json(&json!({"url": format!("{receiver}/{i}")}))
            .send()
            .await?
            .error_for_status()
            .context("creating an endpoint")?;
    }
    Ok(key)
}

/// What publishing produced: message ids with the time each publish started.
#[derive(Default)]
struct Published {
    sent: AtomicU64,
    skipped: AtomicU64,
    /// Answered 503 (too many events waiting): the publisher waits its `Retry-After`.
    turned_away: AtomicU64,
    accepted: Mutex<Vec<(String, Instant)>>,
}

const EVENT: &str = r#"{"type":"delivered","payload":{"event":"delivered","recipient":"alice@example.com","message":{"headers":{"message-id":"20260101.bench@mg.example.com","subject":"Your order"}},"delivery-status":{"code":250,"message":"OK"}}}"#;

/// Publishes one event; when the service turns it away, how long it asked to wait.
async fn publish_one(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    published: &Published,
) -> Option<Duration> {
    let started = Instant::now();
    published.sent.fetch_add(1, Ordering::Relaxed);
    let response = client
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(EVENT)
        .send()
        .await;
    let Ok(response) = response else { return None };
    if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
        published.turned_away.fetch_add(1, Ordering::Relaxed);
        let seconds = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(1);
        return Some(Duration::from_secs(seconds));
    }
    if response.status().as_u16() != 202 {
        return None;
    }
    if let Ok(body) = response.json::<Value>().await {
        if let Some(id) = body["id"].as_str() {
            published
                .accepted
                .lock()
                .expect("accepted lock")
                .push((id.to_string(), started));
        }
    }
    None
}

async fn publish(
    rate: Rate,
    duration: Duration,
    concurrency: usize,
    client: reqwest::Client,
    url: String,
    key: String,
) -> Arc<Published> {
    let published = Arc::new(Published::default());
    let end = Instant::now() + duration;
    match rate {
        Rate::Max => {
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (client, url, key, published) =
                    (client.clone(), url.clone(), key.clone(), published.clone());
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < end {
                        if let Some(wait) = publish_one(&client, &url, &key, &published).await {
                            let left = end.saturating_duration_since(Instant::now());
                            tokio::time::sleep(wait.min(left)).await;
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
        Rate::PerSecond(r) => {
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / r as f64));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
            let total = (r as f64 * duration.as_secs_f64()).round() as u64;
            for _ in 0..total {
                ticks.tick().await;
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    published.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let (client, url, key, published) =
                    (client.clone(), url.clone(), key.clone(), published.clone());
                tokio::spawn(async move {
                    publish_one(&client, &url, &key, &published).await;
                    drop(permit);
                });
            }
            // The requests still in flight.
            let _ = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
        }
    }
    published
}

async fn run_one(args: &LocalArgs, rate: Rate, metrics: bool) -> anyhow::Result<LocalResult> {
    // On threads of its own, so its CPU time is told apart from the publisher's.
    let receiver = Receiver::start_apart(Duration::ZERO)?;
    let service = Service::spawn(&args.binary, &args.log, args.retention, metrics).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()?;
    let key = setup(&client, &service.base, &receiver.url, args.endpoints).await?;
    let key_for_count = key.clone();
    let n = args.endpoints as u64;

    let duration = Duration::from_secs_f64(args.duration);
    let cpu_before = procstat::cpu_time(service.pid)?;
    let bench_cpu_before = procstat::cpu_time(std::process::id())?;
    let receiver_cpu_before = procstat::own_threads_cpu_time(receiver::THREAD_NAME)?;
    let start = Instant::now();
    let (disk_samples, disk_sampler) = sample_disk(service.data.clone(), start);
    // Delivery counts through the run, to measure the sustained rate.
    let samples = Arc::new(Mutex::new(Vec::<(Instant, u64)>::new()));
    let publishing = tokio::spawn(publish(
        rate,
        duration,
        args.concurrency,
        client.clone(),
        format!("{}/v1/events", service.base),
        key,
    ));
    let warmup = start + duration / 10;
    let mut at_warmup = None;
    while !publishing.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Instant::now();
        if at_warmup.is_none() && now >= warmup {
            at_warmup = Some((now, receiver.count()));
        }
        samples
            .lock()
            .expect("samples")
            .push((now, receiver.count()));
    }
    let published = publishing.await?;
    let load_end = Instant::now();
    let at_load_end = receiver.count();
    let accepted = published.accepted.lock().expect("accepted").clone();
    let expected = accepted.len() as u64 * n;

    // The backlog: until everything arrived, the drain time is up, or nothing moved for 20 s.
    let drain_deadline = load_end + Duration::from_secs_f64(args.drain);
    let mut last = (Instant::now(), receiver.count());
    while receiver.count() < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let c = receiver.count();
        if c != last.1 {
            last = (Instant::now(), c);
        } else if last.0.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    // Late duplicates or strays would show up here.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu = procstat::cpu_time(service.pid)? - cpu_before;
    let bench_cpu = procstat::cpu_time(std::process::id())? - bench_cpu_before;
    let receiver_cpu =
        procstat::own_threads_cpu_time(receiver::THREAD_NAME)?.saturating_sub(receiver_cpu_before);
    let peak_rss = procstat::peak_rss_kib(service.pid)?;
    let disk = service.disk_bytes();
    let mut messages_left = None;
    if let Some(retention) = args.retention {
        // The sweeper runs every tenth of the retention: the log empties within a retention
        // and a bit after the last delivery.
        let deadline = Instant::now() + retention + Duration::from_secs(30);
        loop {
            let left = count_messages(&client, &service.base, &key_for_count).await?;
            messages_left = Some(left);
            if left == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    disk_sampler.abort();
    let disk_samples = disk_samples.lock().expect("disk samples").clone();
    service.stop().await;

    let arrivals = receiver.arrivals();
    let sent_at: HashMap<&str, Instant> =
        accepted.iter().map(|(id, t)| (id.as_str(), *t)).collect();
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut last_arrival = start;
    for (id, at) in &arrivals {
        if let Some(t) = sent_at.get(id.as_str()) {
            histogram.record(at.saturating_duration_since(*t).as_micros() as u64)?;
        }
        last_arrival = last_arrival.max(*at);
    }
    let delivered = arrivals.len() as u64;
    let (w_at, w_count) = at_warmup.unwrap_or((start, 0));
    let window = load_end.duration_since(w_at).as_secs_f64().max(1e-3);
    let elapsed = load_end.duration_since(start).as_secs_f64();
    let accepted_per_s = accepted.len() as f64 / elapsed;
    let cpu_split = CpuSplit::of(
        [
            cpu.as_secs_f64(),
            bench_cpu.saturating_sub(receiver_cpu).as_secs_f64(),
            receiver_cpu.as_secs_f64(),
        ],
        accepted.len() as u64,
        delivered,
        args.endpoints,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        accepted_per_s,
    );
    Ok(LocalResult {
        rate: rate.to_string(),
        endpoints: args.endpoints,
        metrics,
        duration_s: elapsed,
        published: published.sent.load(Ordering::Relaxed),
        accepted: accepted.len() as u64,
        accepted_per_s,
        skipped_ticks: published.skipped.load(Ordering::Relaxed),
        turned_away: published.turned_away.load(Ordering::Relaxed),
        deliveries_expected: expected,
        deliveries: delivered,
        deliveries_per_s_sustained: (at_load_end - w_count) as f64 / window,
        deliveries_per_s_overall: delivered as f64
            / last_arrival.duration_since(start).as_secs_f64().max(1e-3),
        drain_s: last_arrival
            .saturating_duration_since(load_end)
            .as_secs_f64(),
        all_delivered: delivered >= expected,
        latency: Latency::of(&histogram),
        cpu_s: cpu.as_secs_f64(),
        cpu_cores: cpu.as_secs_f64() / last_arrival.duration_since(start).as_secs_f64().max(1e-3),
        cpu_ms_per_1000_deliveries: cpu.as_secs_f64() * 1e6 / delivered.max(1) as f64,
        peak_rss_mib: peak_rss as f64 / 1024.0,
        disk_bytes: disk,
        disk_bytes_per_delivery: disk as f64 / delivered.max(1) as f64,
        bench_cpu_s: bench_cpu.as_secs_f64(),
        cpu_split,
        retention: args
            .retention
            .map(|r| humantime::format_duration(r).to_string()),
        db_bytes_by_quarter: [1.0, 2.0, 3.0, 4.0]
            .map(|q| db_bytes_at(&disk_samples, elapsed * q / 4.0)),
        disk_samples,
        messages_left,
    })
}

/// The data file's size at the last sample taken by `t_s`.
fn db_bytes_at(samples: &[DiskSample], t_s: f64) -> u64 {
    samples
        .iter()
        .take_while(|s| s.t_s <= t_s + 0.5)
        .last()
        .map_or(0, |s| s.db_bytes)
}

/// The data file's size through each run, in MiB.
pub fn disk_table(results: &[LocalResult]) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut out = String::from(
        "| rate | endpoints | retention | delivered | data file MiB at ¼ / ½ / ¾ / end of publishing | after the drain | WAL MiB (max) | messages left |\n\
         | --- | ---: | --- | ---: | --- | ---: | ---: | ---: |\n",
    );
    for r in results {
        let q = r.db_bytes_by_quarter;
        let last = r.disk_samples.last().map_or(0, |s| s.db_bytes);
        let wal = r
            .disk_samples
            .iter()
            .map(|s| s.wal_bytes)
            .max()
            .unwrap_or(0);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} / {:.1} / {:.1} / {:.1} | {:.1} | {:.1} | {} |\n",
            r.rate,
            r.endpoints,
            r.retention.as_deref().unwrap_or("30 days (default)"),
            r.deliveries,
            mib(q[0]),
            mib(q[1]),
            mib(q[2]),
            mib(q[3]),
            mib(last),
            mib(wal),
            r.messages_left.map_or("-".to_string(), |n| n.to_string()),
        ));
    }
    out
}

/// The throughput with metrics on over that with them off, per rate measured both ways:
/// (rate, accepted/s ratio, sustained deliveries/s ratio), each the mean of its runs.
pub fn metrics_cost(results: &[LocalResult]) -> Vec<(String, f64, f64)> {
    let mut rates: Vec<&str> = results.iter().map(|r| r.rate.as_str()).collect();
    rates.dedup();
    let mean = |rate: &str, on: bool, f: fn(&LocalResult) -> f64| {
        let runs: Vec<f64> = results
            .iter()
            .filter(|r| r.rate == rate && r.metrics == on)
            .map(f)
            .collect();
        (!runs.is_empty()).then(|| runs.iter().sum::<f64>() / runs.len() as f64)
    };
    rates
        .into_iter()
        .filter_map(|rate| {
            let accepted =
                mean(rate, true, |r| r.accepted_per_s)? / mean(rate, false, |r| r.accepted_per_s)?;
            let delivered = mean(rate, true, |r| r.deliveries_per_s_sustained)?
                / mean(rate, false, |r| r.deliveries_per_s_sustained)?;
            Some((rate.to_owned(), accepted, delivered))
        })
        .collect()
}

/// CPU time per accepted event of each process, per delivery, and the rate that bounds.
pub fn cpu_table(results: &[LocalResult]) -> String {
    let mut out = String::from(
        "| rate | endpoints | metrics | service µs/event | publisher µs/event | receiver µs/event | total µs/event | service µs/delivery | receiver µs/delivery | bound events/s (cores) | bound deliveries/s | accepted/s | share of bound |\n\
         | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in results {
        let c = &r.cpu_split;
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} ({}) | {:.0} | {:.0} | {:.0} % |\n",
            r.rate,
            r.endpoints,
            if r.metrics { "on" } else { "off" },
            c.service_us_per_event,
            c.publisher_us_per_event,
            c.receiver_us_per_event,
            c.total_us_per_event,
            c.service_us_per_delivery,
            c.receiver_us_per_delivery,
            c.bound_events_per_s,
            c.cores,
            c.bound_deliveries_per_s,
            r.accepted_per_s,
            c.accepted_share_of_bound * 100.0,
        ));
    }
    out
}

/// The results as a table, and the cost of metrics where both settings were run.
pub fn table(results: &[LocalResult]) -> String {
    let mut out = String::from(
        "| rate | endpoints | metrics | accepted/s | deliveries/s (sustained) | deliveries/s (overall) | delivered | p50 ms | p95 ms | p99 ms | CPU s | cores | peak RSS MiB | disk B/delivery |\n\
         | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in results {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {}/{} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.1} | {:.0} |\n",
            r.rate,
            r.endpoints,
            if r.metrics { "on" } else { "off" },
            r.accepted_per_s,
            r.deliveries_per_s_sustained,
            r.deliveries_per_s_overall,
            r.deliveries,
            r.deliveries_expected,
            r.latency.p50_ms,
            r.latency.p95_ms,
            r.latency.p99_ms,
            r.cpu_s,
            r.cpu_cores,
            r.peak_rss_mib,
            r.disk_bytes_per_delivery,
        ));
    }
    out.push('\n');
    out.push_str(&cpu_table(results));
    for (rate, accepted, delivered) in metrics_cost(results) {
        out.push_str(&format!(
            "\nmetrics on / off at {rate}: accepted/s x{accepted:.3}, deliveries/s (sustained) x{delivered:.3}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_the_cores_over_the_cpu_of_one_event() {
        // 10,000 events, 30,000 deliveries: 2 s of service, 0.5 s of publisher and 1 s of
        // receiver CPU make 350 µs per event, so 2 cores bound the rate at 5,714 events/s.
        let split = CpuSplit::of([2.0, 0.5, 1.0], 10_000, 30_000, 3, 2, 4_000.0);
        assert_eq!(split.service_us_per_event, 200.0);
        assert_eq!(split.publisher_us_per_event, 50.0);
        assert_eq!(split.receiver_us_per_event, 100.0);
        assert_eq!(split.total_us_per_event, 350.0);
        assert!((split.service_us_per_delivery - 66.667).abs() < 1e-3);
        assert!((split.receiver_us_per_delivery - 33.333).abs() < 1e-3);
        assert!((split.bound_events_per_s - 5_714.286).abs() < 1e-3);
        assert!((split.bound_deliveries_per_s - 17_142.857).abs() < 1e-3);
        assert!((split.accepted_share_of_bound - 0.7).abs() < 1e-9);
    }

    #[test]
    fn a_run_that_accepted_nothing_bounds_nothing() {
        let split = CpuSplit::of([1.0, 0.1, 0.0], 0, 0, 1, 2, 0.0);
        assert_eq!(split.total_us_per_event, 0.0);
        assert_eq!(split.bound_events_per_s, 0.0);
        assert_eq!(split.accepted_share_of_bound, 0.0);
    }
}
