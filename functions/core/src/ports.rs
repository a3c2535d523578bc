//! The ports: what the domain needs from storage, the queue and the clock. Local mode
//! implements them on SQLite; the Lambda functions on DynamoDB and SQS. One contract test
//! suite runs against every implementation.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::ids::{ApiKeyId, EndpointId, MessageId, TenantId};
use crate::keys::KeyHash;
use crate::model::{
    ApiKeyRecord, Attempt, CustomEventType, Delivery, Domain, Endpoint, FailedQuery, HealthChange,
    Message, MessageQuery, Millis, Page, PageQuery, PortalSession, Tenant,
};

/// How a conditional write of one record ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The condition held and the write was made.
    Done,
    /// The record exists but is not at the version (or in the state) the write expected:
    /// someone changed it since the caller read it. Nothing was written.
    Stale,
    /// There is no such record (any more). Nothing was written.
    Missing,
}

/// The most items a store returns for one page, whatever the caller asks for.
pub const MAX_PAGE: usize = 1000;

/// Tenants, their API keys and the operator key.
#[async_trait]
pub trait TenantStore: Send + Sync {
    /// Creates a tenant with its first key.
    async fn create_tenant(&self, tenant: &Tenant, first_key: &ApiKeyRecord) -> Result<()>;
    async fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>>;
    /// A page of the tenants whose parent is `parent`, by id (so oldest first); the cursor
    /// is the last id.
    async fn list_sub_accounts(&self, parent: TenantId, page: &PageQuery) -> Result<Page<Tenant>>;
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()>;
    async fn get_api_key(&self, tenant: TenantId, id: ApiKeyId) -> Result<Option<ApiKeyRecord>>;
    /// A page of a tenant's keys, revoked ones included, by id (so oldest first); the
    /// cursor is the last id.
    async fn list_api_keys(&self, tenant: TenantId, page: &PageQuery)
        -> Result<Page<ApiKeyRecord>>;
    /// Marks a key revoked, keeping the first revocation time. With `only_if_live`, only
    /// a key not revoked yet is changed (`Stale` otherwise): the caller acts on a copy it
    /// read as live. Without it, revoking a revoked key is `Done`.
    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at: Millis,
        only_if_live: bool,
    ) -> Result<Written>;
    async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKeyRecord>>;
    async fn operator_key_hash(&self) -> Result<Option<KeyHash>>;
    /// Stores the operator key's hash unless one is stored; returns whether it stored it.
    async fn init_operator_key_hash(&self, hash: &KeyHash) -> Result<bool>;
    /// A cheap call that succeeds while storage answers, for health checks.
    async fn probe(&self) -> Result<()>;
}

/// Domains and endpoints: what decides where a message goes.
#[async_trait]
pub trait EndpointStore: Send + Sync {
    /// Fails with a conflict if the tenant already has the domain.
    async fn create_domain(&self, domain: &Domain) -> Result<()>;
    async fn get_domain(&self, tenant: TenantId, name: &str) -> Result<Option<Domain>>;
    /// A page of a tenant's domains, by name; the cursor is the last name.
    async fn list_domains(&self, tenant: TenantId, page: &PageQuery) -> Result<Page<Domain>>;
    /// Deletes the domain and the endpoints scoped to it. `created_at`: only the domain
    /// created then (`Stale` for another one of the same name, made after a delete).
    async fn delete_domain(
        &self,
        tenant: TenantId,
        name: &str,
        created_at: Option<Millis>,
    ) -> Result<Written>;
    /// Stores a new endpoint (at version 1), unless the tenant has `max_per_tenant`
    /// endpoints already: then the conflict `too_many_endpoints`, and nothing is stored.
    async fn create_endpoint(&self, endpoint: &Endpoint, max_per_tenant: usize) -> Result<()>;
    /// Replaces the endpoint with `endpoint` if it is still at `expected_version`; the
    /// stored copy gets the next version. `Stale` if it changed meanwhile (an edit, a
    /// health change), `Missing` if it was deleted: nothing is written then.
    async fn update_endpoint(&self, endpoint: &Endpoint, expected_version: u64) -> Result<Written>;
    async fn get_endpoint(&self, tenant: TenantId, id: EndpointId) -> Result<Option<Endpoint>>;
    /// All endpoints of a tenant, oldest first (what a fan-out reads).
    async fn list_endpoints(&self, tenant: TenantId) -> Result<Vec<Endpoint>>;
    /// Whether the tenant has an active endpoint with strict ordering, whose messages must
    /// be sequenced as they are accepted. Asked at every publish, so a store that can
    /// answer from an index should.
    async fn has_ordered_endpoints(&self, tenant: TenantId) -> Result<bool> {
        Ok(self
            .list_endpoints(tenant)
            .await?
            .iter()
            .any(|e| e.is_ordered() && e.status == crate::model::EndpointStatus::Active))
    }
    /// A page of a tenant's endpoints, by id (so oldest first); the cursor is the last id.
    async fn list_endpoints_page(
        &self,
        tenant: TenantId,
        page: &PageQuery,
    ) -> Result<Page<Endpoint>>;
    /// Deletes an endpoint; with `expected_version`, only at that version.
    async fn delete_endpoint(
        &self,
        tenant: TenantId,
        id: EndpointId,
        expected_version: Option<u64>,
    ) -> Result<Written>;
    /// The version of a group of endpoints managed together (a Mailgun webhook: the
    /// endpoints of one name and domain); 0 for a group never written.
    async fn endpoint_group_version(&self, tenant: TenantId, group: &str) -> Result<u64>;
    /// Changes a group's endpoints in one step, if the group is still at
    /// `expected_version` and each endpoint in `remove` still at its version: deletes
    /// those, stores `add` (each new, within `max_per_tenant` as `create_endpoint`), and
    /// moves the group to the next version. `Stale` (nothing written) if the group or an
    /// endpoint to remove changed or went meanwhile.
    async fn update_endpoint_group(
        &self,
        tenant: TenantId,
        group: &str,
        expected_version: u64,
        remove: &[Endpoint],
        add: &[Endpoint],
        max_per_tenant: usize,
    ) -> Result<Written>;
    /// Applies a health change to an endpoint, touching no other field (`updated_at`
    /// included, except when disabling) but its version, which moves on. Returns whether
    /// it changed anything: `Failing` when `failing_since` was unset, `Recovered` when it
    /// was set, `Disable` when the endpoint was active; false too for an endpoint that
    /// does not exist.
    async fn update_endpoint_health(
        &self,
        tenant: TenantId,
        id: EndpointId,
        change: &HealthChange,
    ) -> Result<bool>;
}

/// Who may make the first attempts of a message's deliveries, as
/// [`MessageStore::insert_message_leased`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstAttempts {
    /// This call stored the message, and with it a lease on the first attempt of every
    /// target: the caller makes them without claiming each delivery (no record is written
    /// before the attempt), until the lease ends.
    Leased,
    /// Another call stored the message and holds the first attempts until then.
    HeldUntil(Millis),
    /// Nobody holds them (the message was stored without a lease, or the lease ended, or
    /// the store does not lease): each attempt is claimed with
    /// [`DeliveryStore::claim_delivery`].
    Open,
}

/// What [`MessageStore::insert_message_leased`] returns.
#[derive(Debug, Clone)]
pub struct Inserted {
    /// The stored version: the first one stored under its id.
    pub message: Message,
    pub first_attempts: FirstAttempts,
}

/// Messages and idempotency keys.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Stores the message unless one with its id exists; returns what is stored.
    async fn insert_message(&self, message: &Message) -> Result<Message>;
    /// Stores the message unless one with its id exists, and tells who may make the first
    /// attempts of its deliveries. A store that can write a lease with the message (in the
    /// same conditional write) returns [`FirstAttempts::Leased`] to the call that stored
    /// it, so that the first attempts need no claim of their own; of two concurrent calls
    /// only one is answered `Leased`. Deliveries claimed with
    /// [`DeliveryStore::claim_delivery`] do not look at this lease: it guards the first
    /// attempts against other copies of the same event only, which call this first.
    ///
    /// The default stores without a lease and answers [`FirstAttempts::Open`].
    async fn insert_message_leased(
        &self,
        message: &Message,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Inserted> {
        let _ = (now, lease_until);
        Ok(Inserted {
            message: self.insert_message(message).await?,
            first_attempts: FirstAttempts::Open,
        })
    }
    /// Stores the messages of one page (ids of one [`crate::ids::MessageId::page`], one
    /// owner, in order) unless the page is stored, as
    /// [`MessageStore::insert_message_leased`] stores one: returns each message as stored,
    /// with who may make its first attempts. A store that keeps a page as one item stores
    /// it and its lease in one conditional write; the default stores each message on its
    /// own.
    async fn insert_page_leased(
        &self,
        messages: &[Message],
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<Inserted>> {
        let mut inserted = Vec::with_capacity(messages.len());
        for message in messages {
            inserted.push(
                self.insert_message_leased(message, now, lease_until)
                    .await?,
            );
        }
        Ok(inserted)
    }
    async fn get_message(&self, tenant: TenantId, id: MessageId) -> Result<Option<Message>>;
    /// The tenant's messages, newest first.
    async fn list_messages(&self, tenant: TenantId, query: &MessageQuery) -> Result<Page<Message>>;
    /// Binds an idempotency key to a message id for `ttl`. Returns the id already bound to
    /// the key if there is a live binding, else binds `id` and returns `None`.
    async fn claim_idempotency_key(
        &self,
        tenant: TenantId,
        key: &str,
        id: MessageId,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<MessageId>>;
}

/// Delivery state and the attempt log.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    async fn get_delivery(
        &self,
        message: MessageId,
        endpoint: EndpointId,
    ) -> Result<Option<Delivery>>;
    async fn list_deliveries(&self, message: MessageId) -> Result<Vec<Delivery>>;
    /// Takes the right to make attempt `expected_attempts + 1`: succeeds only if the delivery
    /// is pending with exactly that many recorded attempts (or has no record and
    /// `expected_attempts` is 0) and no other lease is live at `now`.
    async fn claim_delivery(
        &self,
        fresh: &Delivery,
        expected_attempts: u32,
        now: Millis,
        lease_until: Millis,
    ) -> Result<bool>;
    /// Writes the delivery's new state and the attempt, if the delivery still has
    /// `expected_attempts` recorded attempts; returns whether it wrote. The attempt is
    /// `None` when the delivery settles without a request (endpoint deleted or disabled).
    async fn record_attempt(
        &self,
        delivery: &Delivery,
        expected_attempts: u32,
        attempt: Option<&Attempt>,
    ) -> Result<bool>;
    /// Whether the successful first attempts a lease on a page's messages covered are
    /// better recorded together, by [`DeliveryStore::record_page_firsts`] once the page's
    /// first attempts are made, than each by [`DeliveryStore::record_attempt`] as it ends
    /// (a store that bills per write). The default records each as it ends.
    fn records_page_firsts(&self) -> bool {
        false
    }
    /// Records successful first attempts of one page's messages, each with its delivery as
    /// it settled (succeeded after one attempt), made under the page's lease
    /// ([`FirstAttempts::Leased`]): from then on every read of those deliveries and
    /// attempts shows them, and a claim of their first attempt is refused. The default
    /// records each with [`DeliveryStore::record_attempt`].
    async fn record_page_firsts(&self, firsts: &[(Delivery, Attempt)]) -> Result<()> {
        for (delivery, attempt) in firsts {
            self.record_attempt(delivery, 0, Some(attempt)).await?;
        }
        Ok(())
    }
    /// The attempts of one message, oldest first.
    async fn list_attempts(&self, tenant: TenantId, message: MessageId) -> Result<Vec<Attempt>>;
    /// The tenant's failed deliveries to `endpoint` in the query's window, oldest message
    /// first, at most `query.limit` (capped by the store); continue with `after` set to
    /// the last one's message.
    async fn list_failed_deliveries(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        query: &FailedQuery,
    ) -> Result<Vec<Delivery>>;
    /// Reopens a failed delivery for another attempt: it becomes pending, due at `now`,
    /// without a lease, if it is failed with exactly `expected_attempts` recorded
    /// attempts. Returns whether it did; of two concurrent reopens only one succeeds.
    async fn reopen_delivery(
        &self,
        message: MessageId,
        endpoint: EndpointId,
        expected_attempts: u32,
        now: Millis,
    ) -> Result<bool>;
}

/// The event types the operator added; the built-in ones live in [`crate::catalog`].
#[async_trait]
pub trait EventTypeStore: Send + Sync {
    /// Fails with the conflict `event_type_exists` if a type of that name is stored.
    async fn create_event_type(&self, def: &CustomEventType) -> Result<()>;
    async fn get_event_type(&self, name: &str) -> Result<Option<CustomEventType>>;
    /// A page of the stored types, by name; the cursor is the last name.
    async fn list_event_types(&self, page: &PageQuery) -> Result<Page<CustomEventType>>;
}

/// The portal's magic-link tokens and sessions, each stored under the hash of its secret
/// value (a stolen copy of the store opens nothing).
#[async_trait]
pub trait PortalStore: Send + Sync {
    /// Stores a login token for `tenant`, usable once until `expires_at`.
    async fn insert_login_token(
        &self,
        hash: &KeyHash,
        tenant: TenantId,
        expires_at: Millis,
    ) -> Result<()>;
    /// Uses up a login token: removes it and returns its tenant if it was live at `now`.
    /// Of two concurrent calls with one token only one gets the tenant.
    async fn take_login_token(&self, hash: &KeyHash, now: Millis) -> Result<Option<TenantId>>;
    async fn insert_portal_session(&self, hash: &KeyHash, session: &PortalSession) -> Result<()>;
    /// The session if it is live at `now`; `None` for an unknown, ended or expired one.
    async fn get_portal_session(
        &self,
        hash: &KeyHash,
        now: Millis,
    ) -> Result<Option<PortalSession>>;
    /// Ends a session; ending an unknown one is no error.
    async fn delete_portal_session(&self, hash: &KeyHash) -> Result<()>;
}

/// Everything storage offers; what the routers and workers hold.
pub trait Store:
    TenantStore + EndpointStore + MessageStore + DeliveryStore + EventTypeStore + PortalStore
{
}

impl<
        T: TenantStore + EndpointStore + MessageStore + DeliveryStore + EventTypeStore + PortalStore,
    > Store for T
{
}

/// One message to put on the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub body: String,
    /// Hidden from receivers until then; capped at [`Queue::max_delay`].
    pub delay: Duration,
}

/// One message for the ordered queue (see [`Queue::send_sequenced`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    pub body: String,
    /// Its sequence: received only after every message sent before it in the same
    /// sequence is handled (acked or dead-lettered).
    pub group: String,
    /// Two sends with the same id within a few minutes queue one message (SQS FIFO's
    /// deduplication window); a queue without deduplication may queue both.
    pub dedup: String,
}

/// Why a message of a [`Queue::send`] is not on the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The queue refused the message itself (larger than it takes, say): sent again as it
    /// is, it is refused again.
    Refused,
    /// The queue failed or could not be reached: sent again, it may be taken.
    Unavailable,
}

impl Refusal {
    /// The machine-readable code of the refusal, as publishers are told it.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Refused => "queue_refused",
            Refusal::Unavailable => "queue_unavailable",
        }
    }
}

/// One message of a [`Queue::send`] that is not on the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unqueued {
    /// Its position in the messages sent.
    pub index: usize,
    pub refusal: Refusal,
    /// What the queue said, for the log; not for callers of the API.
    pub detail: String,
}

/// The answer to a [`Queue::send`] that did not queue every message: which ones are not on
/// the queue, by position, and why. Every other message of the send is queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotQueued {
    /// How many messages the send had.
    pub sent: usize,
    /// The messages not queued, in the order sent; never empty.
    pub unqueued: Vec<Unqueued>,
}

impl NotQueued {
    /// Every message of a send of `sent` left off the queue for the same reason.
    pub fn all(sent: usize, refusal: Refusal, detail: impl std::fmt::Display) -> Self {
        let detail = detail.to_string();
        NotQueued {
            sent,
            unqueued: (0..sent)
                .map(|index| Unqueued {
                    index,
                    refusal,
                    detail: detail.clone(),
                })
                .collect(),
        }
    }

    /// Whether the message at `index` of the send is on the queue.
    pub fn is_queued(&self, index: usize) -> bool {
        index < self.sent && !self.unqueued.iter().any(|u| u.index == index)
    }

    /// Why the message at `index` is not on the queue; `None` when it is.
    pub fn refusal_of(&self, index: usize) -> Option<Refusal> {
        self.unqueued
            .iter()
            .find(|u| u.index == index)
            .map(|u| u.refusal)
    }
}

impl std::fmt::Display for NotQueued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} messages not queued",
            self.unqueued.len(),
            self.sent
        )?;
        if let Some(first) = self.unqueued.first() {
            write!(
                f,
                ", the first ({}): {}",
                first.refusal.code(),
                first.detail
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for NotQueued {}

impl From<NotQueued> for crate::Error {
    fn from(e: NotQueued) -> Self {
        crate::Error::backend("send to queue", e)
    }
}

/// Sending side of the queue (all the Lambda functions need).
#[async_trait]
pub trait Queue: Send + Sync {
    /// Sends the messages. `Err` names each one that is not on the queue and why; all the
    /// others are queued. A message whose fate the queue did not tell (its answer was
    /// lost) counts as not queued: sending it again may queue a second copy
    /// (at-least-once).
    async fn send(&self, messages: Vec<Outgoing>) -> Result<(), NotQueued>;
    /// Sends messages to the ordered queue, each at the end of its sequence, in the order
    /// given. `Err` as [`Queue::send`]. A queue without an ordered side refuses them.
    /// Whether [`Queue::send_sequenced`] has an ordered side to send to.
    fn keeps_order(&self) -> bool {
        false
    }
    async fn send_sequenced(&self, messages: Vec<Sequenced>) -> Result<(), NotQueued> {
        Err(NotQueued::all(
            messages.len(),
            Refusal::Refused,
            "this deployment has no ordered queue",
        ))
    }
    /// The longest delay the queue supports (SQS: 15 minutes).
    fn max_delay(&self) -> Duration;
    /// `Some(wait)` while the queue holds more work than it takes on: publishers are
    /// turned away and asked to come back after `wait`. SQS takes everything.
    fn push_back(&self) -> Option<Duration> {
        None
    }
    /// A cheap call that succeeds while the queue answers, for health checks.
    async fn probe(&self) -> crate::error::Result<()>;
}

/// A message taken from the queue, invisible to others until acked or its visibility ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub body: String,
    pub receipt: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
}

/// Receiving side, used by the local worker (the SQS event source does this on AWS).
#[async_trait]
pub trait PullQueue: Queue {
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Received>>;
    /// Deletes handled messages.
    async fn ack(&self, receipts: &[String]) -> Result<()>;
    /// Makes a received message visible again after `delay`.
    async fn release(&self, receipt: &str, delay: Duration) -> Result<()>;
    /// Moves a message that can never be handled to the dead-letter queue.
    async fn dead_letter(&self, receipt: &str, reason: &str) -> Result<()>;
    /// Waits until a message may be ready, or at most `max`.
    async fn wait_ready(&self, max: Duration);
}

/// The reason of a message dead-lettered because its receives ran out (SQS's redrive
/// policy attaches none of its own).
pub const MAX_RECEIVES_REASON: &str = "max_receives";

/// One message on the dead-letter queue, as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id on the dead-letter queue (the embedded queue's row, the SQS message id).
    pub id: String,
    /// Why it was dead-lettered: the refusal the worker logged, or `max_receives` for
    /// a message the queue moved after its receives ran out.
    pub reason: String,
    /// When it was dead-lettered (on SQS: when it was first sent).
    pub at: Millis,
    pub body: String,
}

impl DeadLetter {
    /// Where a listing continues after this one: its time and id, `{at}.{id}`.
    pub fn cursor(&self) -> String {
        format!("{}.{}", self.at, self.id)
    }

    /// The time and id a cursor names; `None` for one no listing gave.
    pub fn parse_cursor(cursor: &str) -> Option<(Millis, &str)> {
        let (at, id) = cursor.split_once('.')?;
        Some((at.parse().ok()?, id))
    }

    /// The tenant the message is for, when its body names one (an event task or a
    /// producer's envelope: its owner, else its publisher; a page: its events' owner).
    pub fn tenant(&self) -> Option<crate::ids::TenantId> {
        let body: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        let task = body.get("events").and_then(|e| e.get(0)).unwrap_or(&body);
        let named = |field: &str| {
            task.get(field)?
                .as_str()
                .and_then(crate::ids::TenantId::parse)
        };
        named("owner").or_else(|| named("tenant"))
    }
}

/// The dead-letter queue as the operator's routes use it: what is on it, and sending it
/// back to the events queue.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// A page of the dead letters, oldest first; the cursor is the last one's
    /// [`DeadLetter::cursor`] (an invalid one is a 400 `invalid_cursor`).
    async fn list_dead_letters(&self, page: &PageQuery) -> Result<Page<DeadLetter>>;
    /// Sends the dead letters `ids` names (every one when `None`) back to the events
    /// queue as new messages, and takes them off the dead-letter queue. Returns the ids
    /// redriven; an id not on the dead-letter queue is left out.
    async fn redrive(&self, ids: Option<&[String]>) -> Result<Vec<String>>;
}

/// The time, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    fn now(&self) -> Millis;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        chrono::Utc::now().timestamp_millis()
    }
}

pub type SharedStore = Arc<dyn Store>;
pub type SharedQueue = Arc<dyn Queue>;
pub type SharedClock = Arc<dyn Clock>;
pub type SharedDeadLetters = Arc<dyn DeadLetters>;

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::ids::{MessageId, TenantId};
    use crate::task::{EventTask, PageTask, Task};

    fn letter(body: String) -> DeadLetter {
        DeadLetter {
            id: "1".into(),
            reason: "max_receives".into(),
            at: 0,
            body,
        }
    }

    #[test]
    fn a_dead_letter_names_the_tenant_its_event_or_page_is_for() {
        let (publisher, owner) = (TenantId::new(), TenantId::new());
        let event = |id| {
            let payload = RawValue::from_string("{}".into()).unwrap();
            EventTask::new(id, publisher, "opened".into(), payload, None, None, 1, true)
                .with_owner(Some(owner))
        };
        let one = Task::Event(event(MessageId::new())).to_body();
        assert_eq!(letter(one).tenant(), Some(owner));
        let events = MessageId::page(2).into_iter().map(event).collect();
        let page = Task::Page(PageTask::new(events).unwrap()).to_body();
        assert_eq!(letter(page).tenant(), Some(owner));
        let envelope = format!(r#"{{"tenant":"{publisher}","type":"opened","payload":{{}}}}"#);
        assert_eq!(letter(envelope).tenant(), Some(publisher));
        assert_eq!(letter("{not json".into()).tenant(), None);
    }
}
