//! The tenant portal's pages over a large log: local mode is filled with messages (each
//! delivered to every endpoint), a magic link is opened, and each page is requested over
//! and over. The latency is the client's, on loopback: the server's render time plus a
//! loopback round trip, so an upper bound of the render.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};

use crate::local::{count_messages, setup, Latency, Service};
use crate::receiver::Receiver;

#[derive(clap::Args, Debug, Clone)]
pub struct PortalArgs {
    /// The local-mode binary to run.
    #[arg(long, default_value = "target/release/hookline")]
    pub binary: PathBuf,
    /// Messages in the log before the pages are measured.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// Endpoints, each taking every message.
    #[arg(long, default_value_t = 2)]
    pub endpoints: usize,
    /// Requests per page measured (after a few unmeasured ones).
    #[arg(long, default_value_t = 300)]
    pub requests: usize,
    /// Also write the results here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PageResult {
    pub page: String,
    pub bytes: usize,
    pub latency: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortalResult {
    pub messages: u64,
    pub endpoints: usize,
    pub pages: Vec<PageResult>,
}

const WARM_UP: usize = 5;

pub async fn run(args: &PortalArgs) -> anyhow::Result<PortalResult> {
    let receiver = Receiver::start(Duration::ZERO).await?;
    let service = Service::spawn(&args.binary, "warn", None, true).await?;
    let result = measure(args, &service.base, &receiver).await;
    service.stop().await;
    result
}

async fn measure(
    args: &PortalArgs,
    base: &str,
    receiver: &Receiver,
) -> anyhow::Result<PortalResult> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let key = setup(&client, base, &receiver.url, args.endpoints).await?;
    fill(&client, base, &key, args.messages).await?;
    let expected = (args.messages * args.endpoints) as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while receiver.count() < expected {
        ensure!(
            Instant::now() < deadline,
            "only {} of {expected} deliveries arrived",
            receiver.count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let messages = count_messages(&client, base, &key).await?;
    let cookie = sign_in(&client, base, &key).await?;

    let latest: Value = client
        .get(format!("{base}/v1/messages?limit=1"))
        .bearer_auth(&key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let message = latest["data"][0]["id"]
        .as_str()
        .context("no message in the log")?
        .to_string();
    let endpoints: Value = client
        .get(format!("{base}/v1/endpoints"))
        .bearer_auth(&key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let endpoint = endpoints["data"][0]["id"]
        .as_str()
        .context("no endpoint")?
        .to_string();

    let mut pages = Vec::new();
    for page in [
        "/portal/messages".to_string(),
        "/portal/messages?status=succeeded".to_string(),
        format!("/portal/messages/{message}"),
        "/portal/endpoints".to_string(),
        format!("/portal/endpoints/{endpoint}"),
    ] {
        pages.push(time_page(&client, base, &cookie, &page, args.requests).await?);
    }
    Ok(PortalResult {
        messages,
        endpoints: args.endpoints,
        pages,
    })
}

/// Publishes `n` events in batches of 100.
async fn fill(client: &reqwest::Client, base: &str, key: &str, n: usize) -> anyhow::Result<()> {
    let mut left = n;
    while left > 0 {
        let batch = left.min(100);
        let events: Vec<Value> = (0..batch)
            .map(|i| {
                json!({
                    "type": "delivered",
                    "payload": {"event": "delivered", "recipient": format!("user{i}@example.com")}
                })
            })
            .collect();
        let response = client
            .post(format!("{base}/v1/events"))
            .bearer_auth(key)
            .json(&json!({ "events": events }))
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            // Back-pressure: the worker catches up first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        response.error_for_status().context("publishing a batch")?;
        left -= batch;
    }
    Ok(())
}

/// Opens a magic link and returns the session cookie it set.
async fn sign_in(client: &reqwest::Client, base: &str, key: &str) -> anyhow::Result<String> {
    let link: Value = client
        .post(format!("{base}/v1/portal/sessions"))
        .bearer_auth(key)
        .json(&json!({}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let url = link["url"].as_str().context("no url in the link")?;
    let response = client.get(url).send().await?;
    ensure!(
        response.status() == reqwest::StatusCode::SEE_OTHER,
        "opening the link answered {}",
        response.status()
    );
    for value in response.headers().get_all(reqwest::header::SET_COOKIE) {
        let value = value.to_str()?;
        if let Some(pair) = value.split(';').next() {
            if pair.starts_with("hookline_portal=") {
                return Ok(pair.to_string());
            }
        }
    }
    bail!("the link set no session cookie")
}

async fn time_page(
    client: &reqwest::Client,
    base: &str,
    cookie: &str,
    page: &str,
    requests: usize,
) -> anyhow::Result<PageResult> {
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut bytes = 0;
    for i in 0..WARM_UP + requests {
        let started = Instant::now();
        let response = client
            .get(format!("{base}{page}"))
            .header(reqwest::header::COOKIE, cookie)
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "{page} answered {}",
            response.status()
        );
        let body = response.bytes().await?;
        if i >= WARM_UP {
            histogram.record(started.elapsed().as_micros().max(1) as u64)?;
            bytes = body.len();
        }
    }
    Ok(PageResult {
        page: page.to_string(),
        bytes,
        latency: Latency::of(&histogram),
    })
}

pub fn table(r: &PortalResult) -> String {
    let mut out = format!(
        "portal pages over {} messages ({} endpoints)\n\
         | page | bytes | requests | p50 ms | p95 ms | p99 ms | max ms |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        r.messages, r.endpoints
    );
    for p in &r.pages {
        let l = &p.latency;
        out.push_str(&format!(
            "| `{}` | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            p.page, p.bytes, l.count, l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms
        ));
    }
    out
}
