//! `hookline-bench filters`: what payload filters cost the fan-out, in process. N endpoints
//! with filters of several shapes pick the targets of a stream of payloads through
//! `hookline_core::filter::fan_out` (the deliver engine's own selection), beside the same
//! endpoints without filters; the difference per endpoint is the filters' cost.

use std::hint::black_box;
use std::time::Instant;

use anyhow::Context;
use hookline_core::filter::{fan_out, Filter};
use hookline_core::ids::{EndpointId, TenantId};
use hookline_core::model::{BodyFormat, Endpoint, EndpointStatus};
use hookline_core::signing::{EndpointSecrets, Secret};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct FilterArgs {
    /// Endpoints of the tenant, each with a filter.
    #[arg(long, default_value_t = 100)]
    pub endpoints: usize,
    /// Messages fanned out per measurement.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Also write the results here as JSON.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
pub struct FilterReport {
    pub endpoints: usize,
    pub messages: usize,
    pub payload_bytes: usize,
    /// Per message, endpoints without filters: listing by type and domain only.
    pub unfiltered_ns_per_message: f64,
    /// Per message, every endpoint filtered: reading the payload once plus the filters.
    pub filtered_ns_per_message: f64,
    /// What the filters add, per endpoint: (filtered − unfiltered) / endpoints.
    pub added_ns_per_endpoint: f64,
    /// One filter against an already read payload, on average over the shapes.
    pub eval_ns_per_filter: f64,
    /// Messages × endpoints that matched, a check that the filters were not trivial.
    pub matched_share: f64,
}

/// Filters of the shapes users write, varied by `i` so that no two endpoints agree.
fn filter_of(i: usize) -> Value {
    let n = i as f64;
    match i % 8 {
        0 => json!({"path": "event", "equals": (["delivered", "opened", "failed"][i % 3])}),
        1 => {
            json!({"path": "event", "in": ["failed", "complained", "unsubscribed", format!("custom{i}")]})
        }
        2 => json!({"path": "delivery-status.code", "gte": 400 + (i % 200)}),
        3 => json!({"path": "recipient", "prefix": format!("user{}", i % 10)}),
        4 => json!({"and": [
            {"path": "event", "equals": "failed"},
            {"path": "severity", "equals": "permanent"},
            {"not": {"path": "flags.is-test-mode", "equals": true}}
        ]}),
        5 => json!({"path": "message.headers.to", "exists": i % 2 == 0}),
        6 => json!({"or": [
            {"path": "tags", "equals": format!("tag{}", i % 5)},
            {"path": "user-variables.plan", "in": ["pro", "team"]},
            {"path": "delivery-status.attempt-no", "gt": n % 4.0}
        ]}),
        _ => json!({"path": "recipients.domain", "equals": format!("example{}.com", i % 3)}),
    }
}

/// A Mailgun-like event payload of about a kilobyte, varied by `i`.
fn payload_of(i: usize) -> Box<RawValue> {
    let event = ["delivered", "opened", "failed", "complained"][i % 4];
    let doc = json!({
        "event": event,
        "id": format!("evt-{i:08}"),
        "timestamp": 1_700_000_000.0 + i as f64,
        "severity": if i % 3 == 0 { "permanent" } else { "temporary" },
        "recipient": format!("user{}@example{}.com", i % 37, i % 3),
        "recipients": [{"domain": format!("example{}.com", i % 3)}, {"domain": "other.org"}],
        "tags": [format!("tag{}", i % 7), "newsletter"],
        "flags": {"is-test-mode": i % 11 == 0, "is-authenticated": true},
        "delivery-status": {"code": 200 + (i % 5) * 100, "attempt-no": i % 6,
                            "message": "ok", "description": "a description of some length"},
        "message": {"headers": {"to": "someone@example.com", "from": "app@example.com",
                                "subject": "Your weekly digest, number ".repeat(3),
                                "message-id": format!("{i}@mail.example.com")},
                    "size": 20_000 + i},
        "user-variables": {"plan": (["free", "pro", "team"][i % 3]), "account": i},
        "storage": {"url": "https://storage.example.com/messages/abcdefghijklmnop",
                    "key": "abcdefghijklmnopqrstuvwxyz0123456789"},
    });
    RawValue::from_string(doc.to_string()).expect("JSON")
}

fn endpoints(n: usize, filtered: bool) -> anyhow::Result<Vec<Endpoint>> {
    let tenant = TenantId::new();
    (0..n)
        .map(|i| {
            let filter = filtered
                .then(|| Filter::parse(filter_of(i)))
                .transpose()
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("filter {i}"))?;
            Ok(Endpoint {
                id: EndpointId::new(),
                tenant,
                url: format!("https://hooks.example.com/{i}"),
                description: String::new(),
                event_types: None,
                domain: None,
                filter,
                format: BodyFormat::Raw,
                secrets: EndpointSecrets::new(Secret::generate()),
                status: EndpointStatus::Active,
                disabled_reason: None,
                disabled_at: None,
                failing_since: None,
                rate_limit: None,
                created_at: 0,
                updated_at: 0,
                version: 1,
                headers: Default::default(),
                auth: None,
                ordering: Default::default(),
            })
        })
        .collect()
}

/// Nanoseconds per message of fanning `payloads` (cycled) out to `endpoints`, and the
/// targets chosen in all.
fn time_fan_out(
    endpoints: &[Endpoint],
    payloads: &[Box<RawValue>],
    messages: usize,
) -> (f64, usize) {
    let mut chosen = 0;
    let start = Instant::now();
    for m in 0..messages {
        // The engine gets the tenant's endpoints as a fresh list per message.
        let list = endpoints.to_vec();
        chosen += black_box(fan_out(
            list,
            "delivered",
            None,
            &payloads[m % payloads.len()],
        ))
        .len();
    }
    (start.elapsed().as_nanos() as f64 / messages as f64, chosen)
}

pub fn run(args: &FilterArgs) -> anyhow::Result<FilterReport> {
    anyhow::ensure!(
        args.endpoints > 0 && args.messages > 0,
        "nothing to measure"
    );
    let payloads: Vec<Box<RawValue>> = (0..64).map(payload_of).collect();
    let payload_bytes = payloads.iter().map(|p| p.get().len()).sum::<usize>() / payloads.len();
    let plain = endpoints(args.endpoints, false)?;
    let filtered = endpoints(args.endpoints, true)?;

    // Warm up caches and the allocator before measuring.
    time_fan_out(&plain, &payloads, args.messages / 10 + 1);
    time_fan_out(&filtered, &payloads, args.messages / 10 + 1);
    let (unfiltered, _) = time_fan_out(&plain, &payloads, args.messages);
    let (with_filters, chosen) = time_fan_out(&filtered, &payloads, args.messages);

    let values: Vec<Value> = payloads
        .iter()
        .map(|p| serde_json::from_str(p.get()))
        .collect::<Result<_, _>>()?;
    let rounds = args.messages;
    let start = Instant::now();
    let mut hits = 0usize;
    for r in 0..rounds {
        let v = &values[r % values.len()];
        hits += filtered.iter().filter(|e| black_box(e).accepts(v)).count();
    }
    let eval = start.elapsed().as_nanos() as f64 / (rounds * filtered.len()) as f64;
    black_box(hits);

    Ok(FilterReport {
        endpoints: args.endpoints,
        messages: args.messages,
        payload_bytes,
        unfiltered_ns_per_message: unfiltered,
        filtered_ns_per_message: with_filters,
        added_ns_per_endpoint: (with_filters - unfiltered) / args.endpoints as f64,
        eval_ns_per_filter: eval,
        matched_share: chosen as f64 / (args.messages * args.endpoints) as f64,
    })
}
