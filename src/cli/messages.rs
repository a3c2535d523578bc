//! The message log (`messages list/get/attempts/tail`) and `replay`: one message again,
//! or every failed delivery of an endpoint since a time, calling until the API says
//! `complete`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use owo_colors::OwoColorize;
use serde_json::{json, Value};

use super::api::{encode, Api};
use super::output::{self, Column};
use super::resources::{api, show, show_list, Page};
use super::{usage, Global};

#[derive(Debug, Subcommand)]
pub enum Messages {
    /// List messages, newest first.
    #[command(after_help = "Example:\n  hookline messages list --type delivered --limit 20")]
    List {
        /// Only messages of this event type.
        #[arg(long = "type")]
        event_type: Option<String>,
        #[command(flatten)]
        page: Page,
    },
    /// Show a message with the state of its delivery to each endpoint.
    #[command(after_help = "Example:\n  hookline messages get msg_...")]
    Get { id: String },
    /// List a message's delivery attempts, oldest first.
    #[command(after_help = "Example:\n  hookline messages attempts msg_... --json")]
    Attempts {
        id: String,
        #[command(flatten)]
        page: Page,
    },
    /// Follow the log: new messages, then their deliveries as they settle (Ctrl-C stops).
    #[command(after_help = "Example:\n  hookline messages tail --interval 2s")]
    Tail {
        /// How often to look.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
}

const MESSAGE_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("TYPE", "type"),
    ("DOMAIN", "domain"),
    ("RECEIVED", "received_at"),
];

pub async fn messages(cmd: Messages, global: &Global) -> anyhow::Result<()> {
    let api = api(global)?;
    match cmd {
        Messages::List { event_type, page } => {
            let path = match event_type {
                Some(t) => format!("/v1/messages?type={}", encode(&t)),
                None => "/v1/messages".to_string(),
            };
            let items = api.list(&path, page.limit()).await?;
            show_list(global, items, MESSAGE_COLUMNS);
        }
        Messages::Get { id } => {
            let message = api.get(&format!("/v1/messages/{}", encode(&id))).await?;
            show(global, &message);
            if !global.json {
                let deliveries = message["deliveries"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                anstream::println!("{}", "deliveries:".bold());
                output::list(
                    &deliveries,
                    &[
                        ("ENDPOINT", "endpoint_id"),
                        ("STATUS", "status"),
                        ("ATTEMPTS", "attempts"),
                        ("LAST STATUS", "last_status_code"),
                        ("LAST ERROR", "last_error"),
                        ("NEXT ATTEMPT", "next_attempt_at"),
                    ],
                );
            }
        }
        Messages::Attempts { id, page } => {
            let path = format!("/v1/messages/{}/attempts", encode(&id));
            let items = api.list(&path, page.limit()).await?;
            show_list(
                global,
                items,
                &[
                    ("#", "attempt"),
                    ("ENDPOINT", "endpoint_id"),
                    ("AT", "at"),
                    ("OUTCOME", "outcome"),
                    ("STATUS", "status_code"),
                    ("MS", "latency_ms"),
                    ("ERROR", "error"),
                ],
            );
        }
        Messages::Tail { interval } => {
            tokio::select! {
                r = tail(&api, interval, global.json) => r?,
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    }
    Ok(())
}

/// Messages whose deliveries are followed at most at once; older ones are let go.
const FOLLOWED: usize = 200;

/// Polls the log: prints each message received after the start, then each change of its
/// deliveries' states until none is pending.
async fn tail(api: &Api, interval: Duration, json: bool) -> anyhow::Result<()> {
    // Message ids are ULIDs: newer sorts after older.
    let mut newest: Option<String> = api.get("/v1/messages?limit=1").await?["data"][0]["id"]
        .as_str()
        .map(str::to_string);
    // Per followed message: each endpoint's last state shown.
    let mut followed: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    // Said once the starting point is read: what is published from now on is shown.
    if json {
        println_json(&json!({"kind": "following"}));
    } else {
        anstream::println!("{}", "Following the message log (Ctrl-C stops)…".dimmed());
    }
    loop {
        let mut fresh = Vec::new();
        let mut cursor: Option<String> = None;
        'pages: loop {
            let mut path = "/v1/messages?limit=100".to_string();
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", encode(c)));
            }
            let page = api.get(&path).await?;
            for m in page["data"].as_array().into_iter().flatten() {
                let id = m["id"].as_str().unwrap_or_default().to_string();
                if newest.as_ref().is_some_and(|n| &id <= n) {
                    break 'pages;
                }
                fresh.push(m.clone());
            }
            cursor = page["next_cursor"].as_str().map(str::to_string);
            if cursor.is_none() {
                break;
            }
        }
        for m in fresh.iter().rev() {
            let id = m["id"].as_str().unwrap_or_default().to_string();
            if json {
                println_json(&json!({"kind": "message", "message": m}));
            } else {
                anstream::println!(
                    "{}  {}  {}  {}",
                    m["received_at"].as_str().unwrap_or_default().dimmed(),
                    id.bold(),
                    m["type"].as_str().unwrap_or_default().cyan(),
                    m["domain"].as_str().unwrap_or("-"),
                );
            }
            newest = Some(id.clone());
            followed.insert(id, BTreeMap::new());
        }
        while followed.len() > FOLLOWED {
            followed.pop_first();
        }
        let ids: Vec<String> = followed.keys().cloned().collect();
        for id in ids {
            let message = match api.get(&format!("/v1/messages/{}", encode(&id))).await {
                Ok(m) => m,
                Err(e)
                    if e.downcast_ref::<super::Refused>()
                        .is_some_and(|r| r.status == 404) =>
                {
                    followed.remove(&id);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let shown = followed.get_mut(&id).expect("followed");
            let mut pending = false;
            for d in message["deliveries"].as_array().into_iter().flatten() {
                let endpoint = d["endpoint_id"].as_str().unwrap_or_default().to_string();
                let status = d["status"].as_str().unwrap_or_default().to_string();
                pending |= status == "pending";
                let key = format!("{status}/{}", d["attempts"]);
                if shown.get(&endpoint) == Some(&key) {
                    continue;
                }
                if json {
                    println_json(&json!({"kind": "delivery", "message_id": id, "delivery": d}));
                } else {
                    let detail = match (d["last_status_code"].as_u64(), d["last_error"].as_str()) {
                        (Some(code), _) => format!("HTTP {code}"),
                        (None, Some(e)) => e.to_string(),
                        _ => String::new(),
                    };
                    anstream::println!(
                        "    {id} → {endpoint}  {}  attempts {}  {}",
                        output::state(&status),
                        d["attempts"],
                        detail.dimmed()
                    );
                }
                shown.insert(endpoint, key);
            }
            if !pending {
                followed.remove(&id);
            }
        }
        tokio::time::sleep(interval).await;
    }
}

fn println_json(v: &Value) {
    anstream::println!("{v}");
}

#[derive(Debug, Subcommand)]
pub enum Replay {
    /// Send one message again to each endpoint whose delivery failed (or to one).
    #[command(after_help = "Example:\n  hookline replay message msg_... --endpoint ep_...")]
    Message {
        id: String,
        /// Only the delivery to this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Send again every failed delivery to an endpoint of a message received since a time.
    #[command(
        after_help = "Examples:\n  hookline replay endpoint ep_... --since 2024-05-01T00:00:00Z\n  hookline replay endpoint ep_... --since 6h"
    )]
    Endpoint(ReplayEndpoint),
}

#[derive(Debug, Args)]
pub struct ReplayEndpoint {
    pub id: String,
    /// An RFC 3339 time, or a duration before now (`90m`, `2d`).
    #[arg(long)]
    pub since: String,
    /// An RFC 3339 time, or a duration before now; now when absent.
    #[arg(long)]
    pub until: Option<String>,
}

/// An RFC 3339 time as given, or `now - duration`.
fn time(flag: &str, text: &str, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.to_rfc3339());
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        usage(format!(
            "{flag} {text:?} is neither an RFC 3339 time (2024-05-01T00:00:00Z) nor a duration (2h)"
        ))
    })?;
    let ago =
        chrono::Duration::from_std(ago).map_err(|_| usage(format!("{flag} is too long ago")))?;
    Ok((now - ago).to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

pub async fn replay(cmd: Replay, global: &Global) -> anyhow::Result<()> {
    let api = api(global)?;
    match cmd {
        Replay::Message { id, endpoint } => {
            let body = match endpoint {
                Some(e) => json!({"endpoint_id": e}),
                None => json!({}),
            };
            let answer = api
                .post(&format!("/v1/messages/{}/replay", encode(&id)), &body)
                .await?;
            if global.json {
                output::json(&answer);
            } else {
                output::success(&format!("Queued {} deliveries again", answer["queued"]));
                for s in answer["skipped"].as_array().into_iter().flatten() {
                    anstream::println!(
                        "  skipped {} ({})",
                        s["endpoint_id"].as_str().unwrap_or_default(),
                        s["reason"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        Replay::Endpoint(r) => {
            let now = chrono::Utc::now();
            let since = time("--since", &r.since, now)?;
            // A fixed end, so that failures arriving meanwhile do not keep the paging going.
            let until = match &r.until {
                Some(u) => time("--until", u, now)?,
                None => now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            };
            let path = format!("/v1/endpoints/{}/replay", encode(&r.id));
            let bar = ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {pos} deliveries queued again ({elapsed})")
                    .expect("the template is valid"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            let mut queued = 0u64;
            let mut calls = 0u64;
            loop {
                calls += 1;
                let answer = api
                    .post(&path, &json!({"since": since, "until": until}))
                    .await?;
                let n = answer["queued"]
                    .as_u64()
                    .context("the answer has no `queued`")?;
                queued += n;
                bar.inc(n);
                if answer["complete"].as_bool() != Some(false) {
                    break;
                }
                if n == 0 {
                    anyhow::bail!(
                        "the API reports more to replay but queued none; try again later"
                    );
                }
            }
            bar.finish_and_clear();
            if global.json {
                output::json(&json!({"queued": queued, "calls": calls, "complete": true}));
            } else {
                output::success(&format!(
                    "Queued {queued} deliveries again ({calls} requests)"
                ));
            }
        }
    }
    Ok(())
}
