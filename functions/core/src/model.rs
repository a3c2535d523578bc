//! The records Hookline keeps: tenants, keys, domains, endpoints, messages, deliveries and
//! attempts. Times are milliseconds since the Unix epoch.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::credentials::{CustomHeaders, SealedAuth};
use crate::filter::Filter;
use crate::ids::{ApiKeyId, AttemptId, EndpointId, MessageId, TenantId};
use crate::keys::KeyHash;
use crate::signing::EndpointSecrets;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    /// The tenant this one is a sub-account of; `None` for a top-level tenant. One level
    /// only: a sub-account has no sub-accounts.
    pub parent: Option<TenantId>,
    pub created_at: Millis,
}

/// A tenant's API key as stored: only its hash and a short prefix to recognise it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub tenant: TenantId,
    pub hash: KeyHash,
    pub prefix: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub tenant: TenantId,
    pub name: String,
    pub created_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointStatus {
    Active,
    Disabled,
}

impl EndpointStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointStatus::Active => "active",
            EndpointStatus::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(EndpointStatus::Active),
            "disabled" => Some(EndpointStatus::Disabled),
            _ => None,
        }
    }
}

/// How a message's payload is put in the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// The payload exactly as published.
    #[default]
    Raw,
    /// Paubox's shape: `{"event_name": <event type>, "payload": <payload>}`.
    Envelope,
    /// Mailgun's shape: `{"signature": {"timestamp", "token", "signature"}, "event-data":
    /// <payload>}`, signed as Mailgun signs so that Mailgun receivers work unchanged.
    Mailgun,
}

impl BodyFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyFormat::Raw => "raw",
            BodyFormat::Envelope => "envelope",
            BodyFormat::Mailgun => "mailgun",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "raw" => Some(BodyFormat::Raw),
            "envelope" => Some(BodyFormat::Envelope),
            "mailgun" => Some(BodyFormat::Mailgun),
            _ => None,
        }
    }
}

/// Whether an endpoint's messages may be delivered side by side or one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// In parallel, each message on its own retry clock.
    #[default]
    None,
    /// One at a time in the order they were accepted (per ordering key): each waits until
    /// the one before it succeeded or ran out of retries.
    Strict,
}

impl Ordering {
    pub fn as_str(self) -> &'static str {
        match self {
            Ordering::None => "none",
            Ordering::Strict => "strict",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Ordering::None),
            "strict" => Some(Ordering::Strict),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: EndpointId,
    pub tenant: TenantId,
    pub url: String,
    pub description: String,
    /// `None` subscribes to every event type.
    pub event_types: Option<Vec<String>>,
    /// `None` is organisation-wide: events of every domain of the tenant.
    pub domain: Option<String>,
    /// A condition on the payload a message must meet to go to the endpoint; `None`: all.
    pub filter: Option<Filter>,
    pub format: BodyFormat,
    pub secrets: EndpointSecrets,
    pub status: EndpointStatus,
    pub disabled_reason: Option<String>,
    /// When the endpoint was disabled, by the API or automatically.
    pub disabled_at: Option<Millis>,
    /// The time of the first failed attempt since the endpoint's last success (or its
    /// creation); `None` while it succeeds. Written only when it changes (see
    /// [`HealthChange`]).
    pub failing_since: Option<Millis>,
    /// At most this many requests per second to the endpoint; `None`: no limit.
    pub rate_limit: Option<u32>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Counts the writes of the record: 1 when created, one more at every change (health
    /// changes included). Writes are conditional on it, so a change made from an older
    /// copy is refused instead of undoing the changes made since.
    pub version: u64,
    /// Extra headers every request carries (names lower case, checked by
    /// [`crate::credentials::headers`]).
    pub headers: CustomHeaders,
    /// How requests authenticate to the receiver, sealed; `None`: they do not.
    pub auth: Option<SealedAuth>,
    pub ordering: Ordering,
}

/// A change of an endpoint's health made by delivery, written on its own so that it
/// neither overwrites nor is overwritten by an API change to the rest of the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthChange {
    /// The first failure after a success (or creation): sets `failing_since` to `at`
    /// unless it is set.
    Failing { at: Millis },
    /// A success: clears `failing_since`.
    Recovered,
    /// Disables an active endpoint with a reason, at `at`.
    Disable { reason: String, at: Millis },
}

impl HealthChange {
    /// The automatic disabling of an endpoint that has failed every attempt since
    /// `failing_since`, as of `now`.
    pub fn auto_disable(failing_since: Millis, now: Millis) -> Self {
        let since = chrono::DateTime::from_timestamp_millis(failing_since)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| failing_since.to_string());
        // Whole seconds, so the period reads "5days 2h 3m 4s" rather than with nanoseconds.
        let secs = (now - failing_since).max(0) as u64 / 1000;
        let period = humantime::format_duration(std::time::Duration::from_secs(secs));
        HealthChange::Disable {
            reason: format!(
                "every attempt failed since {since} (for {period}); disabled automatically"
            ),
            at: now,
        }
    }
}

impl Endpoint {
    /// Whether a message of this type and domain goes to this endpoint.
    pub fn subscribes_to(&self, event_type: &str, domain: Option<&str>) -> bool {
        self.status == EndpointStatus::Active
            && self
                .event_types
                .as_ref()
                .is_none_or(|types| types.iter().any(|t| t == event_type))
            && match &self.domain {
                None => true,
                Some(scope) => domain == Some(scope.as_str()),
            }
    }

    /// Whether its messages go one at a time through the ordered queue.
    pub fn is_ordered(&self) -> bool {
        self.ordering == Ordering::Strict
    }

    /// Whether a payload passes the endpoint's filter (every payload does without one).
    pub fn accepts(&self, payload: &serde_json::Value) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(payload))
    }
}

/// One published event, with the endpoints it fans out to (fixed when it is first processed).
#[derive(Debug, Clone)]
pub struct Message {
    pub id: MessageId,
    /// Whose event it is: its log and endpoints (the owner named at publishing, else the
    /// publisher).
    pub tenant: TenantId,
    /// The tenant that published it, when that is not `tenant` (a parent publishing for
    /// one of its sub-accounts).
    pub publisher: Option<TenantId>,
    pub domain: Option<String>,
    pub event_type: String,
    pub payload: Box<RawValue>,
    pub idempotency_key: Option<String>,
    pub received_at: Millis,
    pub targets: Vec<EndpointId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "succeeded" => Some(DeliveryStatus::Succeeded),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }

    pub fn is_final(self) -> bool {
        self != DeliveryStatus::Pending
    }
}

/// The state of one (message, endpoint) pair. A target without a record is pending with
/// no attempt made yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message: MessageId,
    pub endpoint: EndpointId,
    pub tenant: TenantId,
    pub status: DeliveryStatus,
    /// Attempts completed and recorded.
    pub attempts: u32,
    pub next_attempt_at: Option<Millis>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    /// A worker holds the right to make attempt `attempts + 1` until then.
    pub lease_until: Option<Millis>,
    pub updated_at: Millis,
}

impl Delivery {
    /// The state of a target before its first attempt.
    pub fn fresh(message: MessageId, endpoint: EndpointId, tenant: TenantId, now: Millis) -> Self {
        Delivery {
            message,
            endpoint,
            tenant,
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: None,
            last_status_code: None,
            last_error: None,
            lease_until: None,
            updated_at: now,
        }
    }
}

/// How one HTTP try ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// 2xx.
    Succeeded,
    /// Failed and will be tried again.
    Retrying,
    /// Failed and will not be tried again (406/410, or the schedule is exhausted).
    Failed,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Retrying => "retrying",
            AttemptOutcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "succeeded" => Some(AttemptOutcome::Succeeded),
            "retrying" => Some(AttemptOutcome::Retrying),
            "failed" => Some(AttemptOutcome::Failed),
            _ => None,
        }
    }
}

/// One HTTP try of one message to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: AttemptId,
    pub message: MessageId,
    pub endpoint: EndpointId,
    pub tenant: TenantId,
    /// 1 for the first try.
    pub number: u32,
    pub at: Millis,
    pub status_code: Option<u16>,
    pub latency_ms: u32,
    /// The start of the response body, capped.
    pub response: String,
    /// Why no status was received (timeout, connect, blocked, …).
    pub error: Option<String>,
    pub outcome: AttemptOutcome,
}

/// An event type the operator added beside the built-in catalog.
#[derive(Debug, Clone)]
pub struct CustomEventType {
    pub name: String,
    pub provider: String,
    pub description: String,
    /// A sample payload (a JSON object), kept as the exact text the operator sent.
    pub sample: Box<RawValue>,
    pub created_at: Millis,
}

/// A page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back as the cursor to get the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// Where a page of a listing in key order starts, and how long it is.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    /// Continue after this key (exclusive): the last key of the previous page.
    pub after: Option<String>,
    pub limit: usize,
}

impl PageQuery {
    pub fn first(limit: usize) -> Self {
        PageQuery { after: None, limit }
    }
}

/// Filters for the message log.
#[derive(Debug, Clone, Default)]
pub struct MessageQuery {
    /// Return messages older than this one.
    pub before: Option<MessageId>,
    pub limit: usize,
    pub event_type: Option<String>,
}

/// Which failed deliveries of one endpoint to list for a replay: those of messages
/// received in `[since, until)`, oldest first. Messages are placed in time by their id,
/// a ULID minted when the message was received.
#[derive(Debug, Clone)]
pub struct FailedQuery {
    pub since: Millis,
    /// `None`: up to now.
    pub until: Option<Millis>,
    /// Continue after this message (exclusive), from the previous page.
    pub after: Option<MessageId>,
    pub limit: usize,
}

impl FailedQuery {
    /// The window as inclusive bounds on message ids: the first id at `since` (or the one
    /// after `after`), and the last id before `until`.
    pub fn id_range(&self) -> (MessageId, Option<MessageId>) {
        let first = |ms: Millis| ulid::Ulid::from_parts(ms.max(0) as u64, 0);
        let mut from = first(self.since);
        if let Some(after) = self.after.map(|a| a.ulid()) {
            // Past the largest id there is nothing left: the window ends before `from`.
            let next = after.increment().unwrap_or(after);
            if next > from {
                from = next;
            }
        }
        let to = self
            .until
            .map(|ms| ulid::Ulid::from_parts((ms.max(1) - 1) as u64, u128::MAX));
        (MessageId::from_ulid(from), to.map(MessageId::from_ulid))
    }
}

/// A signed-in portal session, stored under the hash of its cookie value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalSession {
    /// The tenant the magic link was made for; its sub-accounts are reachable too.
    pub tenant: TenantId,
    /// The session's form token: every state-changing portal request must carry it.
    pub csrf: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}
