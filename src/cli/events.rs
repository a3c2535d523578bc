//! `events publish`: one event from flags, or JSON lines from a file or stdin published
//! in batches, with a progress bar and a summary of what the API accepted.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::resources::{api, json_arg};
use super::{output, usage, Global};

/// The most events `POST /v1/events` takes at once.
const MAX_BATCH: usize = 100;
/// Times a batch is sent again while the API answers "not now" (503).
const MAX_TRIES: u32 = 30;

#[derive(Debug, Subcommand)]
pub enum Events {
    /// Publish one event (flags), or many from a file or stdin (one JSON event a line).
    #[command(
        after_help = "Examples:\n  hookline events publish --type delivered --payload '{\"recipient\": \"a@example.com\"}'\n  hookline events publish --file events.jsonl      # lines like {\"type\": \"opened\", \"payload\": {...}}\n  cat events.jsonl | hookline events publish --file -"
    )]
    Publish(Publish),
}

#[derive(Debug, Args)]
pub struct Publish {
    /// JSON lines to publish, each an event (`{"type", "payload", "domain"?,
    /// "idempotency_key"?, "owner"?}`); `-` reads stdin.
    #[arg(long, conflicts_with_all = ["event_type", "payload"])]
    pub file: Option<PathBuf>,
    /// Events per request, 1 to 100.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub batch_size: u16,
    /// The event type (one event).
    #[arg(long = "type", requires = "payload")]
    pub event_type: Option<String>,
    /// The payload as JSON (one event).
    #[arg(long, requires = "event_type")]
    pub payload: Option<String>,
    #[arg(long, conflicts_with = "file")]
    pub domain: Option<String>,
    #[arg(long, conflicts_with = "file")]
    pub idempotency_key: Option<String>,
    /// Publish for this sub-account (its endpoints and log).
    #[arg(long, conflicts_with = "file")]
    pub owner: Option<String>,
}

pub async fn run(cmd: Events, global: &Global) -> anyhow::Result<()> {
    let Events::Publish(p) = cmd;
    match (&p.file, &p.event_type, &p.payload) {
        (Some(file), _, _) => publish_lines(file, p.batch_size as usize, global).await,
        (None, Some(t), Some(payload)) => {
            let mut event = json!({"type": t, "payload": json_arg("--payload", payload)?});
            for (name, v) in [
                ("domain", &p.domain),
                ("idempotency_key", &p.idempotency_key),
                ("owner", &p.owner),
            ] {
                if let Some(v) = v {
                    event[name] = json!(v);
                }
            }
            let answer = api(global)?.post("/v1/events", &event).await?;
            if global.json {
                output::json(&answer);
            } else {
                output::success(&format!(
                    "Published {}",
                    answer["id"].as_str().unwrap_or_default()
                ));
            }
            Ok(())
        }
        _ => Err(usage("give --type and --payload, or --file")),
    }
}

/// Reads every line first, so that a malformed line is reported before anything is sent.
fn read_lines(file: &PathBuf) -> anyhow::Result<Vec<Value>> {
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(file)
            .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
    }
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event: Value = serde_json::from_str(line)
            .map_err(|e| usage(format!("line {}: not JSON: {e}", n + 1)))?;
        if !event.is_object() {
            return Err(usage(format!("line {}: an event is a JSON object", n + 1)));
        }
        events.push(event);
    }
    Ok(events)
}

async fn publish_lines(file: &PathBuf, batch_size: usize, global: &Global) -> anyhow::Result<()> {
    let events = read_lines(file)?;
    let api = api(global)?;
    let bar = ProgressBar::new(events.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events published ({per_sec}) {msg}")
            .expect("the template is valid"),
    );
    let mut ids: Vec<String> = Vec::with_capacity(events.len());
    let mut batches = 0;
    let mut refused = None;
    'batches: for batch in events.chunks(batch_size.min(MAX_BATCH)) {
        let mut pending: Vec<Value> = batch.to_vec();
        let mut tries = 0;
        while !pending.is_empty() {
            batches += 1;
            tries += 1;
            let answer = api
                .call(
                    Method::POST,
                    "/v1/events",
                    Some(&json!({"events": pending})),
                )
                .await?;
            let status = answer.status;
            if status.is_success() {
                let got = answer.body["ids"].as_array().cloned().unwrap_or_default();
                ids.extend(got.iter().filter_map(|v| v.as_str().map(str::to_string)));
                bar.inc(pending.len() as u64);
                break;
            }
            let code = answer.body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let retry = status == StatusCode::SERVICE_UNAVAILABLE && tries < MAX_TRIES;
            if retry && code == "not_queued" {
                // Those queued keep their ids; only the others go again.
                let fates = answer.body["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let mut again = Vec::new();
                for (event, fate) in pending.iter().zip(fates.iter()) {
                    if fate["queued"].as_bool() == Some(true) {
                        if let Some(id) = fate["id"].as_str() {
                            ids.push(id.to_string());
                        }
                        bar.inc(1);
                    } else {
                        again.push(event.clone());
                    }
                }
                pending = again;
                tokio::time::sleep(Duration::from_millis(500)).await;
            } else if retry {
                bar.set_message(format!("(the API is busy: {code}, waiting)"));
                tokio::time::sleep(answer.retry_after.unwrap_or(Duration::from_secs(1))).await;
            } else {
                refused = Some(answer.into_result().expect_err("an error status"));
                break 'batches;
            }
        }
    }
    bar.finish_and_clear();
    let accepted = ids.len();
    let total = events.len();
    if global.json {
        output::json(&json!({
            "accepted": accepted,
            "total": total,
            "batches": batches,
            "ids": ids,
            "error": refused.as_ref().map(|r| json!({"code": r.code, "message": r.message})),
        }));
    } else if refused.is_none() {
        output::success(&format!(
            "Accepted {accepted} of {total} events in {batches} requests"
        ));
    } else {
        anstream::println!("Accepted {accepted} of {total} events in {batches} requests");
    }
    match refused {
        Some(r) => Err(r.into()),
        None => Ok(()),
    }
}
