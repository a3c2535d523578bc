//! The service's metrics: their names and labels, and the small functions every call site
//! records them with, through the `metrics` facade. Local mode publishes them as Prometheus
//! text (`hookline_` prefix, `_total` on counters); the Lambda functions as CloudWatch EMF
//! lines ([`emf`]) under the bare names. Labels are a few fixed values each.

#[cfg(feature = "lambda")]
pub mod emf;

use std::time::Duration;

use metrics::{counter, gauge, histogram};

/// Events taken for delivery; label `source`: `http` (published through the API) or `sqs`
/// (written to the events queue by a producer).
pub const EVENTS_ACCEPTED: &str = "events_accepted";
/// Events not taken; label `reason`: the error code answered (`unknown_event_type`, …).
pub const EVENTS_REFUSED: &str = "events_refused";
/// Queue messages moved to the dead letters; label `reason`.
pub const EVENTS_DEAD_LETTERED: &str = "events_dead_lettered";
/// Requests made to receivers; label `outcome` (see [`crate::verdict::outcome_class`]).
pub const DELIVERY_ATTEMPTS: &str = "delivery_attempts";
/// How long each of those requests took; label `outcome`.
pub const ATTEMPT_DURATION: &str = "attempt_duration";
/// From publish to the successful delivery, retries included; no label.
pub const DELIVERY_LATENCY: &str = "delivery_latency";
/// Attempts that failed and have another one scheduled.
pub const RETRIES_SCHEDULED: &str = "retries_scheduled";
/// Deliveries that failed their last scheduled attempt.
pub const DELIVERIES_EXHAUSTED: &str = "deliveries_exhausted";
/// Endpoints disabled by delivery (410, or failing for the configured period).
pub const ENDPOINTS_DISABLED: &str = "endpoints_disabled";
/// Messages in the embedded queue, delayed and in flight included (local mode).
pub const QUEUE_DEPTH: &str = "queue_depth";
/// Age of the oldest message in the embedded queue, in seconds (local mode).
pub const QUEUE_OLDEST_AGE: &str = "queue_oldest_age";
/// Answered API requests; labels `route` (the route template) and `status`.
pub const API_REQUESTS: &str = "api_requests";
/// How long answering took; label `route`.
pub const API_REQUEST_DURATION: &str = "api_request_duration";

/// The histograms that measure time: recorded in seconds, published by EMF in
/// milliseconds.
pub const DURATIONS: [&str; 3] = [ATTEMPT_DURATION, DELIVERY_LATENCY, API_REQUEST_DURATION];

/// The `route` label of a request that matched no route: unknown paths are many, and each
/// must not become a series of its own.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Where an accepted event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Http,
    Sqs,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Http => "http",
            Source::Sqs => "sqs",
        }
    }
}

pub fn events_accepted(source: Source, n: usize) {
    counter!(EVENTS_ACCEPTED, "source" => source.as_str()).increment(n as u64);
}

pub fn events_refused(reason: &'static str, n: usize) {
    counter!(EVENTS_REFUSED, "reason" => reason).increment(n as u64);
}

pub fn event_dead_lettered(reason: &'static str) {
    counter!(EVENTS_DEAD_LETTERED, "reason" => reason).increment(1);
}

/// One request to a receiver, of outcome class `outcome`, that took `took`.
pub fn delivery_attempt(outcome: &'static str, took: Duration) {
    counter!(DELIVERY_ATTEMPTS, "outcome" => outcome).increment(1);
    histogram!(ATTEMPT_DURATION, "outcome" => outcome).record(took.as_secs_f64());
}

/// A delivery that succeeded `latency` after its event was published.
pub fn delivered(latency: Duration) {
    histogram!(DELIVERY_LATENCY).record(latency.as_secs_f64());
}

pub fn retry_scheduled() {
    counter!(RETRIES_SCHEDULED).increment(1);
}

pub fn delivery_exhausted() {
    counter!(DELIVERIES_EXHAUSTED).increment(1);
}

pub fn endpoint_disabled() {
    counter!(ENDPOINTS_DISABLED).increment(1);
}

/// The embedded queue as it stands: its messages and the age of the oldest.
pub fn queue(depth: usize, oldest_age: Duration) {
    gauge!(QUEUE_DEPTH).set(depth as f64);
    gauge!(QUEUE_OLDEST_AGE).set(oldest_age.as_secs_f64());
}

/// One answered API request: `route` is the matched route's template (or
/// [`UNMATCHED_ROUTE`]), never the path itself.
pub fn api_request(route: &str, status: u16, took: Duration) {
    let route = route.to_owned();
    counter!(API_REQUESTS, "route" => route.clone(), "status" => status.to_string()).increment(1);
    histogram!(API_REQUEST_DURATION, "route" => route).record(took.as_secs_f64());
}
