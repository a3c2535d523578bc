//! Delivery: turns queue messages into signed HTTP requests. An event task stores the
//! message and fans it out; each (message, endpoint) pair then has its own attempts and
//! retry clock, carried by attempt tasks. The same handler runs in the deliver Lambda
//! function (SQS trigger) and in local mode's worker.
//!
//! Exactly-once is not possible over HTTP; this is how close it gets. Before each request
//! the worker holds a lease on the delivery, so two copies of a task cannot both send:
//! for the first attempts of a fan-out, the lease written with the message by the
//! conditional put that stored it (another copy of the event finds the message stored
//! and waits for that lease to end), where the store can write one; for any other
//! attempt, a claim on the delivery, conditional on the number of attempts it has seen.
//! So on DynamoDB the happy path of an event is one write before its requests and one
//! per delivery after. The events of one publish come as a page (one queue message): its
//! messages are stored by one write, with one lease, and where the store asks for it
//! ([`DeliveryStore::records_page_firsts`]) the page's successful first attempts are
//! recorded by one more once all of its first attempts are made, so a page of ten costs
//! two writes on the happy path whatever its fan-out. A retry's task is queued before the
//! attempt's result is recorded, so a worker dying between the two loses nothing. The one
//! window for a duplicate is a worker dying after the receiver answered and before the
//! result was recorded (for a page, before its first answers were): the task comes back
//! (after the lease) and the request is sent again.
//!
//! [`DeliveryStore::records_page_firsts`]: hookline_core::ports::DeliveryStore::records_page_firsts
//!
//! Delivery also keeps each endpoint's health: the first failure after a success marks it
//! failing, a success clears that, and an endpoint still failing after the configured
//! period is disabled. An endpoint with a rate limit gets at most that many requests per
//! second from this process (see [`rate`]).
//!
//! What delivery tells about itself (an endpoint disabled, a delivery failing or out of
//! retries) it queues as operational events, like any event (see
//! [`hookline_core::operational`], which also says why they cannot loop).

pub mod rate;
pub mod share;
#[cfg(feature = "lambda")]
pub mod sqs;
pub mod worker;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use futures::FutureExt;
use hookline_core::config::CoreConfig;
use hookline_core::error::panic_message;
use hookline_core::ids::TenantId;
use hookline_core::ids::{AttemptId, EndpointId, MessageId};
use hookline_core::metrics;
use hookline_core::model::{
    Attempt, AttemptOutcome, Delivery, DeliveryStatus, Endpoint, EndpointStatus, HealthChange,
    Message, Millis,
};
use hookline_core::operational::{self, Operational};
use hookline_core::ports::{
    FirstAttempts, Inserted, Outgoing, Sequenced, SharedClock, SharedQueue, SharedStore,
};
use hookline_core::task::{self, AttemptTask, EventTask, Origin, PageTask, Task};
use hookline_core::verdict::{health_change, outcome_class, refused_for_good, Verdict};
use hookline_core::webhook::{render, Outbound};
use hookline_core::{Error, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use hookline_core::client::{Sender, SenderOptions};

/// What to do with a queue message after handling it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Handled; delete it.
    Done,
    /// Try it again after about this long (a dependency failed, or a delivery is leased
    /// by another worker).
    Retry(Duration),
    /// It can never be handled; move it to the dead-letter queue.
    DeadLetter(String),
}

/// Where one (message, endpoint) pair stands after a step.
enum Step {
    Settled,
    Busy(Duration),
}

/// Who may make an attempt, and where its retries go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The first attempt of a fan-out, the caller's by the lease stored with the message.
    Leased,
    /// Claimed on the delivery; a retry is a new attempt task.
    Claimed,
    /// Claimed, at the head of an endpoint's sequence on the ordered queue: the task is
    /// kept back (not re-queued) for every wait, so nothing behind it moves.
    Ordered,
}

/// How an event's deliveries are ordered: its ordering key, and whether it came in its
/// owner's sequence on the ordered queue.
#[derive(Debug, Clone, Default)]
struct EventOrder {
    key: Option<String>,
    sequenced: bool,
}

/// The successful first attempts of a page being fanned out, to be recorded together.
type PageFirsts = Arc<std::sync::Mutex<Vec<(Delivery, Attempt)>>>;

tokio::task_local! {
    /// Set while a page's fan-outs run in a store that records their first answers
    /// together: a leased first attempt that succeeds is added here instead of recorded.
    static PAGE_FIRSTS: PageFirsts;
}

/// A queue message that makes the handler panic, for the tests that a panic costs one
/// task only. Only in builds with the `fault-injection` feature.
#[cfg(feature = "fault-injection")]
pub const PANICKING_TASK: &str = "hookline-fault-injection: panic";

/// Wait before handling a task again after a storage or queue fault (or a panic).
const FAULT_BACKOFF: Duration = Duration::from_secs(5);
/// Wait before looking again at a delivery whose previous attempt is not recorded yet.
const PREDECESSOR_WAIT: Duration = Duration::from_secs(1);

/// The most added to a rate-limited task's wait, at random, so that the tasks held back
/// together do not all come back at the same moment.
const RATE_JITTER: Duration = Duration::from_millis(500);

pub struct Deliverer {
    store: SharedStore,
    queue: SharedQueue,
    clock: SharedClock,
    config: Arc<CoreConfig>,
    sender: Arc<Sender>,
    rates: rate::RateLimits,
    /// See [`Deliverer::with_request_limit`].
    limits: Option<RequestLimits>,
}

/// The bound on requests in flight, and each endpoint's share of it.
struct RequestLimits {
    permits: Arc<Semaphore>,
    limit: u32,
    shares: share::Shares,
}

impl Deliverer {
    pub fn new(
        store: SharedStore,
        queue: SharedQueue,
        clock: SharedClock,
        config: Arc<CoreConfig>,
        sender: Arc<Sender>,
    ) -> Self {
        Deliverer {
            store,
            queue,
            clock,
            config,
            sender,
            rates: rate::RateLimits::default(),
            limits: None,
        }
    }

    /// Makes at most `limit` requests at once, whatever the fan-out of the messages in
    /// hand: each request holds a connection and its buffers, so this bounds memory. A
    /// message waits for its fan-out's permits before it takes its lease, so the wait is
    /// never spent holding a delivery. No endpoint may have more than half of them in
    /// flight (see [`share`]): one that stops answering cannot stall the others.
    pub fn with_request_limit(mut self, limit: usize) -> Self {
        let limit = u32::try_from(limit.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        self.limits = Some(RequestLimits {
            permits: Arc::new(Semaphore::new(limit as usize)),
            limit,
            shares: share::Shares::new(limit as usize / 2, self.config.request_timeout),
        });
        self
    }

    /// Permits for `n` requests, or as many as the limit has (a fan-out wider than the
    /// limit then runs alone).
    async fn request_permits(&self, n: usize) -> Option<OwnedSemaphorePermit> {
        let limits = self.limits.as_ref()?;
        let n = u32::try_from(n.max(1))
            .unwrap_or(u32::MAX)
            .min(limits.limit);
        Arc::clone(&limits.permits).acquire_many_owned(n).await.ok()
    }

    /// Handles one queue message. A panic while handling it fails this message alone: it
    /// is retried like a message whose storage failed, and dead-lettered by the queue
    /// after its maximum receives if it keeps panicking.
    pub async fn handle(&self, body: &str, origin: Origin) -> Disposition {
        match AssertUnwindSafe(self.handle_task(body, origin))
            .catch_unwind()
            .await
        {
            Ok(disposition) => disposition,
            Err(panic) => {
                tracing::error!(
                    panic = panic_message(panic.as_ref()),
                    "delivery task panicked; will retry"
                );
                Disposition::Retry(FAULT_BACKOFF)
            }
        }
    }

    async fn handle_task(&self, body: &str, origin: Origin) -> Disposition {
        #[cfg(feature = "fault-injection")]
        if body == PANICKING_TASK {
            panic!("injected panic in a delivery task");
        }
        let task = match Task::parse(body, origin) {
            Ok(t) => t,
            Err(reason) => {
                tracing::warn!(%reason, "malformed queue message");
                metrics::event_dead_lettered("malformed");
                return Disposition::DeadLetter(reason);
            }
        };
        let result = match task {
            Task::Event(t) => self.handle_event(t).await,
            Task::Attempt(t) => self.handle_attempt(t).await,
            Task::Page(p) => self.handle_page(p).await,
        };
        match result {
            Ok(Step::Settled) => Disposition::Done,
            Ok(Step::Busy(wait)) => Disposition::Retry(wait),
            Err(Error::Backend { context, source }) => {
                tracing::error!(%context, error = %source, "delivery step failed; will retry");
                Disposition::Retry(FAULT_BACKOFF)
            }
            Err(e) => {
                tracing::warn!(error = %e, "event refused");
                metrics::event_dead_lettered(e.code());
                Disposition::DeadLetter(e.to_string())
            }
        }
    }

    /// Stores an event's message and makes the first attempt of each of its deliveries.
    /// The message is put first, without looking for it: on the happy path that one
    /// conditional write is all the storage the fan-out needs before its requests (the
    /// lease on the first attempts travels with it, see [`FirstAttempts`]).
    async fn handle_event(&self, task: EventTask) -> Result<Step> {
        // Stored under its owner, as the task names it; an owner a producer may not name
        // finds nothing there and is refused by `admit`.
        let (owner, id) = (task.route().tenant, task.id);
        let from_producer = !task.key_claimed;
        let order = EventOrder {
            key: task.ordering_key.clone(),
            sequenced: task.sequenced,
        };
        let refusal = match self.admit(task).await {
            Ok(Some(admitted)) => {
                if from_producer {
                    metrics::events_accepted(metrics::Source::Sqs, 1);
                }
                return self.store_and_fan_out(admitted, &order).await;
            }
            Ok(None) => None,
            Err(e) if e.is_retryable() => return Err(e),
            Err(refused) => Some(refused),
        };
        // Refused, or a duplicate key: still delivered if an earlier copy of this event
        // stored it (what it names may have gone since, or its key expired and was bound
        // again), as its deliveries may not all be settled.
        match self.store.get_message(owner, id).await? {
            Some(stored) => {
                self.fan_out(&stored, FirstAttempts::Open, &[], None, &order)
                    .await
            }
            None => match refusal {
                Some(refused) => Err(refused),
                None => {
                    tracing::info!(message = %id, "duplicate idempotency key; dropped");
                    Ok(Step::Settled)
                }
            },
        }
    }

    /// Stores the messages of a page (one publish's events for one owner) in one write,
    /// with the lease on all their first attempts, and fans each out. Where the store
    /// records a page's first answers together ([`DeliveryStore::records_page_firsts`]),
    /// the successful ones are recorded in one write once every first attempt of the page
    /// is made; the others (failures, which a retry or a replay builds on) each as it ends.
    ///
    /// [`DeliveryStore::records_page_firsts`]: hookline_core::ports::DeliveryStore::records_page_firsts
    async fn handle_page(&self, page: PageTask) -> Result<Step> {
        // Ingest checked a page's events and bound no key for them: admitting one reads
        // only its owner's endpoints.
        let mut admitted = Vec::with_capacity(page.events.len());
        for task in page.events {
            admitted.extend(self.admit(task).await?);
        }
        let messages: Vec<Message> = admitted.iter().map(|a| a.message.clone()).collect();
        let targets: usize = messages.iter().map(|m| m.targets.len()).sum();
        // Taken before the lease is written, so that no lease runs down while waiting.
        let mut permits = if self.config.retry.initial_delay().is_zero() {
            self.request_permits(targets).await
        } else {
            None
        };
        let now = self.clock.now();
        let lease_until = now + self.config.lease().as_millis() as Millis;
        let inserted = self
            .store
            .insert_page_leased(&messages, now, lease_until)
            .await?;
        let unordered = EventOrder::default();
        let fan_outs = inserted.iter().zip(&admitted).map(|(inserted, admitted)| {
            // Each message its fan-out's share; the last one what is left.
            let wanted = inserted.message.targets.len();
            let permit = permits
                .as_mut()
                .filter(|p| p.num_permits() > wanted)
                .and_then(|p| p.split(wanted));
            let permit = permit.or_else(|| permits.take());
            self.fan_out(
                &inserted.message,
                inserted.first_attempts,
                &admitted.endpoints,
                permit,
                &unordered,
            )
        });
        let firsts = PageFirsts::default();
        let steps = if self.store.records_page_firsts() {
            PAGE_FIRSTS.scope(firsts.clone(), join_all(fan_outs)).await
        } else {
            join_all(fan_outs).await
        };
        let firsts = std::mem::take(&mut *firsts.lock().unwrap_or_else(|e| e.into_inner()));
        if !firsts.is_empty() {
            self.store.record_page_firsts(&firsts).await?;
        }
        merge(steps)
    }

    async fn store_and_fan_out(&self, admitted: Admitted, order: &EventOrder) -> Result<Step> {
        let Admitted { message, endpoints } = admitted;
        if message.targets.is_empty() && operational::is_reserved(&message.event_type) {
            // Nobody takes it: not kept, so that a log holds the operational events of
            // those who asked for them only.
            tracing::debug!(message = %message.id, event_type = %message.event_type, "operational event without subscribers; dropped");
            return Ok(Step::Settled);
        }
        let mut permits = None;
        // A sequenced event makes no attempt itself (see `fan_out`): nothing to lease.
        let inserted = if self.config.retry.initial_delay().is_zero() && !order.sequenced {
            // Taken before the lease is written, so that no lease runs down while waiting.
            permits = self.request_permits(message.targets.len()).await;
            let now = self.clock.now();
            let lease_until = now + self.config.lease().as_millis() as Millis;
            self.store
                .insert_message_leased(&message, now, lease_until)
                .await?
        } else {
            // No attempt is made now, so nothing to lease.
            Inserted {
                message: self.store.insert_message(&message).await?,
                first_attempts: FirstAttempts::Open,
            }
        };
        self.fan_out(
            &inserted.message,
            inserted.first_attempts,
            &endpoints,
            permits,
            order,
        )
        .await
    }

    /// Makes (or queues, with an initial delay) the first attempt of every target of a
    /// stored message. `known`: endpoints read for this event already, spared a read each.
    /// `permits`: the fan-out's request permits, if taken already; else they are taken here
    /// when requests are made and bounded.
    async fn fan_out(
        &self,
        message: &Message,
        first: FirstAttempts,
        known: &[Endpoint],
        permits: Option<OwnedSemaphorePermit>,
        order: &EventOrder,
    ) -> Result<Step> {
        let ordered = self.ordered_targets(message, known).await?;
        if order.sequenced || !ordered.is_empty() {
            return self
                .fan_out_ordered(message, first, known, permits, order, &ordered)
                .await;
        }
        let initial = self.config.retry.initial_delay();
        if !initial.is_zero() {
            let not_before = message.received_at + initial.as_millis() as Millis;
            let tasks = message
                .targets
                .iter()
                .map(|ep| AttemptTask::new(message.id, *ep, message.tenant, 0, not_before))
                .collect();
            self.enqueue(tasks).await?;
            return Ok(Step::Settled);
        }
        if let FirstAttempts::HeldUntil(until) = first {
            return self.behind_lease(message, until).await;
        }
        let leased = first == FirstAttempts::Leased;
        // One permit per request, each given back as its request ends, so a slow endpoint
        // of the fan-out holds only its own.
        let n = message.targets.len();
        let mut permits = match permits {
            Some(permits) => Some(permits),
            None => self.request_permits(n).await,
        };
        let per_target: Vec<_> = (0..n)
            .map(|i| {
                if i + 1 < n {
                    permits.as_mut().and_then(|p| p.split(1))
                } else {
                    permits.take()
                }
            })
            .collect();
        let mode = if leased { Mode::Leased } else { Mode::Claimed };
        let steps = join_all(message.targets.iter().zip(per_target).map(|(ep, permit)| {
            let endpoint = known.iter().find(|e| e.id == *ep).cloned();
            self.step(message, *ep, 0, endpoint, mode, permit)
        }))
        .await;
        merge(steps)
    }

    /// The targets of a message that are strictly ordered endpoints. Read from `known`
    /// when it has every target (a fan-out's own read), else from storage.
    async fn ordered_targets(
        &self,
        message: &Message,
        known: &[Endpoint],
    ) -> Result<Vec<EndpointId>> {
        let covers = |endpoints: &[Endpoint]| {
            message
                .targets
                .iter()
                .filter(|t| endpoints.iter().any(|e| e.id == **t && e.is_ordered()))
                .copied()
                .collect()
        };
        if message
            .targets
            .iter()
            .all(|t| known.iter().any(|e| e.id == *t))
        {
            return Ok(covers(known));
        }
        Ok(covers(&self.store.list_endpoints(message.tenant).await?))
    }

    /// The fan-out of an event with ordered targets, or of one in its owner's sequence:
    /// each ordered delivery is appended to its endpoint's sequence for the event's
    /// ordering key, where it waits for those before it. The other deliveries are made as
    /// usual, but by attempt tasks when the event is sequenced, so that a slow receiver
    /// of theirs does not hold up the owner's sequence.
    async fn fan_out_ordered(
        &self,
        message: &Message,
        first: FirstAttempts,
        known: &[Endpoint],
        permits: Option<OwnedSemaphorePermit>,
        order: &EventOrder,
        ordered: &[EndpointId],
    ) -> Result<Step> {
        let sequenced: Vec<Sequenced> = ordered
            .iter()
            .map(|ep| Sequenced {
                body: Task::Attempt(AttemptTask::ordered(message.id, *ep, message.tenant))
                    .to_body(),
                group: task::sequence(&ep.to_string(), order.key.as_deref()),
                dedup: format!("{}:{ep}", message.id),
            })
            .collect();
        self.queue.send_sequenced(sequenced).await?;
        let mut rest = message.clone();
        rest.targets.retain(|t| !ordered.contains(t));
        if rest.targets.is_empty() {
            return Ok(Step::Settled);
        }
        if order.sequenced {
            let not_before =
                message.received_at + self.config.retry.initial_delay().as_millis() as Millis;
            let tasks = rest
                .targets
                .iter()
                .map(|ep| AttemptTask::new(message.id, *ep, message.tenant, 0, not_before))
                .collect();
            self.enqueue(tasks).await?;
            return Ok(Step::Settled);
        }
        let unordered = EventOrder::default();
        Box::pin(self.fan_out(&rest, first, known, permits, &unordered)).await
    }

    /// Makes the next attempt of a delivery at the head of its endpoint's sequence, unless
    /// it is settled (then the sequence moves on) or its next attempt is not due (then it
    /// stays at the head, and the task comes back when it is).
    async fn handle_ordered(&self, task: AttemptTask) -> Result<Step> {
        let Some(message) = self.store.get_message(task.tenant, task.message).await? else {
            tracing::warn!(message = %task.message, "message of an ordered delivery is gone");
            return Ok(Step::Settled);
        };
        let now = self.clock.now();
        let expect = match self.store.get_delivery(message.id, task.endpoint).await? {
            Some(d) if d.status.is_final() => return Ok(Step::Settled),
            Some(d) => {
                if let Some(due) = d.next_attempt_at.filter(|due| *due > now) {
                    return Ok(Step::Busy(wait_until(due, now)));
                }
                d.attempts
            }
            None => {
                let due =
                    message.received_at + self.config.retry.initial_delay().as_millis() as Millis;
                if due > now {
                    return Ok(Step::Busy(wait_until(due, now)));
                }
                0
            }
        };
        let permit = self.request_permits(1).await;
        self.step(&message, task.endpoint, expect, None, Mode::Ordered, permit)
            .await
    }

    /// A copy of an event whose first attempts another worker holds (it stored the
    /// message): done if every first attempt is recorded already, else back once the
    /// lease ends, when each delivery is claimed, which tells what that worker left undone.
    async fn behind_lease(&self, message: &Message, until: Millis) -> Result<Step> {
        let recorded = self.store.list_deliveries(message.id).await?;
        let attempted = |ep: &EndpointId| {
            recorded
                .iter()
                .any(|d| d.endpoint == *ep && (d.status.is_final() || d.attempts > 0))
        };
        if message.targets.iter().all(attempted) {
            return Ok(Step::Settled);
        }
        Ok(Step::Busy(wait_until(until, self.clock.now())))
    }

    /// Checks an event the worker sees first (a producer wrote it to the queue) and builds
    /// its message with the endpoints it goes to. `None`: a duplicate to drop.
    async fn admit(&self, task: EventTask) -> Result<Option<Admitted>> {
        // Ingest checked its tasks' tenant (the API key's) and owner; a producer's are
        // checked here, as ingest would.
        let route = if task.key_claimed {
            task.route()
        } else {
            if self.store.get_tenant(task.tenant).await?.is_none() {
                return Err(Error::invalid(
                    "unknown_tenant",
                    format!("unknown tenant {}", task.tenant),
                ));
            }
            let envelope = hookline_core::envelope::EventEnvelope {
                event_type: task.event_type.clone(),
                payload: task.payload.clone(),
                domain: task.domain.clone(),
                idempotency_key: task.idempotency_key.clone(),
                owner: task.owner.map(|o| o.to_string()),
                ordering_key: task.ordering_key.clone(),
            };
            let route = envelope
                .validate(task.tenant, &self.config, self.store.as_ref())
                .await?
                .route();
            // Keys are scoped by the publisher, whoever owns the event.
            if let Some(key) = &task.idempotency_key {
                let bound = self
                    .store
                    .claim_idempotency_key(
                        task.tenant,
                        key,
                        task.id,
                        self.clock.now(),
                        self.config.idempotency_ttl,
                    )
                    .await?;
                if bound.is_some_and(|first| first != task.id) {
                    return Ok(None);
                }
            }
            route
        };
        let endpoints = hookline_core::filter::fan_out(
            self.store.list_endpoints(route.tenant).await?,
            &task.event_type,
            task.domain.as_deref(),
            &task.payload,
        );
        let message = Message {
            id: task.id,
            tenant: route.tenant,
            publisher: route.publisher_if_other(),
            domain: task.domain,
            event_type: task.event_type,
            payload: task.payload,
            idempotency_key: task.idempotency_key,
            received_at: task.received_at,
            targets: endpoints.iter().map(|e| e.id).collect(),
        };
        Ok(Some(Admitted { message, endpoints }))
    }

    async fn handle_attempt(&self, task: AttemptTask) -> Result<Step> {
        if task.ordered {
            return self.handle_ordered(task).await;
        }
        let now = self.clock.now();
        if task.not_before > now {
            // Longer than the queue can delay: wait again.
            self.enqueue(vec![task]).await?;
            return Ok(Step::Settled);
        }
        let Some(message) = self.store.get_message(task.tenant, task.message).await? else {
            tracing::warn!(message = %task.message, "message of an attempt task is gone");
            return Ok(Step::Settled);
        };
        let permit = self.request_permits(1).await;
        self.step(
            &message,
            task.endpoint,
            task.expect,
            None,
            Mode::Claimed,
            permit,
        )
        .await
    }

    /// Makes attempt `expect + 1` of a delivery if that is still the next thing to do.
    /// The claim is the check: it succeeds only for a pending delivery with exactly
    /// `expect` attempts and no live lease, and only when it is refused is the delivery
    /// read to tell why. `mode`: whether there is anything to claim, and where waits go.
    /// `known`: the endpoint as read
    /// for this event (in the deliver function, the endpoint cache's copy: a change made
    /// through the API is seen within that cache's lifetime, a few seconds). `_permit`:
    /// this request's permit, held until it is recorded.
    async fn step(
        &self,
        message: &Message,
        endpoint_id: EndpointId,
        expect: u32,
        known: Option<Endpoint>,
        mode: Mode,
        _permit: Option<OwnedSemaphorePermit>,
    ) -> Result<Step> {
        let endpoint = match known {
            Some(endpoint) => Some(endpoint),
            None => self.store.get_endpoint(message.tenant, endpoint_id).await?,
        };
        let endpoint = match endpoint {
            Some(e) if e.status == EndpointStatus::Active => e,
            other => {
                let reason = if other.is_some() {
                    "endpoint_disabled"
                } else {
                    "endpoint_deleted"
                };
                return self
                    .settle_unsent(message, endpoint_id, expect, reason)
                    .await;
            }
        };
        if let Some(per_second) = endpoint.rate_limit {
            if let Some(wait) = self.rates.check(endpoint.id, per_second) {
                if mode == Mode::Ordered {
                    return Ok(Step::Busy(wait));
                }
                return self
                    .hold_back(message, endpoint_id, expect, wait, RATE_JITTER)
                    .await;
            }
        }
        let _slot = match &self.limits {
            Some(limits) => match limits.shares.take(endpoint.id).await {
                Ok(slot) => Some(slot),
                Err(wait) if mode == Mode::Ordered => return Ok(Step::Busy(wait)),
                Err(wait) => {
                    return self
                        .hold_back(message, endpoint_id, expect, wait, wait / 2)
                        .await
                }
            },
            None => None,
        };
        let now = self.clock.now();
        let delivery = Delivery {
            attempts: expect,
            ..Delivery::fresh(message.id, endpoint_id, message.tenant, now)
        };
        if mode != Mode::Leased {
            let lease_until = now + self.config.lease().as_millis() as Millis;
            if !self
                .store
                .claim_delivery(&delivery, expect, now, lease_until)
                .await?
            {
                if mode == Mode::Ordered {
                    // Looked at again when the task comes back: the head of a sequence
                    // moves on only once its delivery is settled.
                    return Ok(Step::Busy(PREDECESSOR_WAIT));
                }
                return self.refused_claim(message.id, endpoint_id, expect).await;
            }
        }
        self.attempt(message, &endpoint, delivery, expect, mode)
            .await
    }

    /// Why a claim was refused, from the delivery as it stands: settled or attempted
    /// already, or some other worker's turn for now.
    async fn refused_claim(
        &self,
        message: MessageId,
        endpoint: EndpointId,
        expect: u32,
    ) -> Result<Step> {
        let current = self.store.get_delivery(message, endpoint).await?;
        let now = self.clock.now();
        Ok(match current {
            Some(delivery) => {
                blocked(&delivery, expect, now).unwrap_or(Step::Busy(PREDECESSOR_WAIT))
            }
            // Only a delivery that has a record can refuse an attempt past the first: the
            // attempt before this one is not recorded yet (see `blocked`).
            None => Step::Busy(PREDECESSOR_WAIT),
        })
    }

    /// Settles a delivery without a request, its endpoint being deleted or disabled, if
    /// that is still the next thing to do.
    async fn settle_unsent(
        &self,
        message: &Message,
        endpoint_id: EndpointId,
        expect: u32,
        reason: &str,
    ) -> Result<Step> {
        let now = self.clock.now();
        let current = self.store.get_delivery(message.id, endpoint_id).await?;
        let mut settled = current
            .unwrap_or_else(|| Delivery::fresh(message.id, endpoint_id, message.tenant, now));
        if let Some(step) = blocked(&settled, expect, now) {
            return Ok(step);
        }
        settled.status = DeliveryStatus::Failed;
        settled.last_error = Some(reason.into());
        settled.next_attempt_at = None;
        settled.lease_until = None;
        settled.updated_at = now;
        self.store.record_attempt(&settled, expect, None).await?;
        Ok(Step::Settled)
    }

    async fn attempt(
        &self,
        message: &Message,
        endpoint: &Endpoint,
        mut delivery: Delivery,
        expect: u32,
        mode: Mode,
    ) -> Result<Step> {
        let ordered = mode == Mode::Ordered;
        let started = self.clock.now();
        let (headers, body) = render(&Outbound::from(message), endpoint, started);
        let response = self
            .sender
            .deliver(
                endpoint,
                self.config.credentials_key.as_ref(),
                headers,
                body,
            )
            .await;
        let now = self.clock.now();
        let number = expect + 1;
        let status = response.status;
        let verdict = Verdict::of(status, response.retry_after, number, &self.config.retry);
        let (outcome, next_delay) = (verdict.outcome, verdict.next_delay);
        let class = outcome_class(status, response.error.as_deref());
        metrics::delivery_attempt(class, response.latency);
        if verdict.succeeded() {
            let since_publish = now.saturating_sub(message.received_at).max(0);
            metrics::delivered(Duration::from_millis(since_publish as u64));
        } else if next_delay.is_some() {
            metrics::retry_scheduled();
        } else if !refused_for_good(status) {
            metrics::delivery_exhausted();
        }

        if let (Some(delay), true) = (next_delay, ordered) {
            // The task of an ordered delivery is its retry: it comes back after the delay,
            // still at the head of its sequence.
            delivery.next_attempt_at = Some(now + delay.as_millis() as Millis);
        } else if let Some(delay) = next_delay {
            // Queued before the result is recorded: see the module comment.
            let not_before = now + delay.as_millis() as Millis;
            self.enqueue(vec![AttemptTask::new(
                message.id,
                endpoint.id,
                message.tenant,
                number,
                not_before,
            )])
            .await?;
            delivery.next_attempt_at = Some(not_before);
        } else {
            delivery.next_attempt_at = None;
        }
        delivery.status = verdict.delivery_status();
        delivery.attempts = number;
        delivery.last_status_code = status;
        delivery.last_error = response.error.clone();
        delivery.lease_until = None;
        delivery.updated_at = now;
        let attempt = Attempt {
            id: AttemptId::new(),
            message: message.id,
            endpoint: endpoint.id,
            tenant: message.tenant,
            number,
            at: started,
            status_code: status,
            latency_ms: response.latency.as_millis().min(u32::MAX as u128) as u32,
            response: response.excerpt,
            error: response.error,
            outcome,
        };
        // `message_id`: a field named `message` would clash with the line's own message in
        // the JSON logs.
        tracing::info!(
            message_id = %message.id,
            endpoint_id = %endpoint.id,
            attempt = number,
            status,
            error = attempt.error.as_deref(),
            outcome = outcome.as_str(),
            class,
            latency_ms = attempt.latency_ms,
            "delivery attempt"
        );
        // A page's successful first attempt is recorded with the page's others (see
        // `handle_page`); it tells nobody anything.
        let with_page = mode == Mode::Leased
            && verdict.succeeded()
            && PAGE_FIRSTS
                .try_with(|firsts| {
                    firsts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((delivery.clone(), attempt.clone()))
                })
                .is_ok();
        let recorded = with_page
            || self
                .store
                .record_attempt(&delivery, expect, Some(&attempt))
                .await?;
        if recorded {
            // Once per delivery: only the worker whose result was recorded tells.
            if let Some(event) = self.attempt_event(message, &attempt, now) {
                self.publish(message.tenant, event).await;
            }
        } else {
            tracing::warn!(message = %message.id, endpoint = %endpoint.id, "attempt result lost a race; not recorded");
        }
        // After the result is recorded: a fault here must not send the request again.
        if let Err(e) = self.track_health(endpoint, status, now).await {
            tracing::error!(endpoint = %endpoint.id, error = %e, "endpoint health not updated");
        }
        match next_delay {
            Some(delay) if ordered => Ok(Step::Busy(delay)),
            _ => Ok(Step::Settled),
        }
    }

    /// Keeps the endpoint's health after an attempt (see [`health_change`]), writing only
    /// when it changes.
    async fn track_health(
        &self,
        endpoint: &Endpoint,
        status: Option<u16>,
        now: Millis,
    ) -> Result<()> {
        let Some(change) = health_change(endpoint, status, now, self.config.disable_after) else {
            return Ok(());
        };
        let changed = self
            .store
            .update_endpoint_health(endpoint.tenant, endpoint.id, &change)
            .await?;
        if changed {
            if let HealthChange::Disable { reason, at } = &change {
                tracing::warn!(endpoint = %endpoint.id, %reason, "endpoint disabled");
                metrics::endpoint_disabled();
                // Once per disabling: only the change that found the endpoint active
                // tells, whatever the message was (see `operational` on loops).
                let event = Operational::EndpointDisabled {
                    endpoint: endpoint.id,
                    reason: reason.clone(),
                    failing_since: Some(endpoint.failing_since.unwrap_or(*at)),
                    at: *at,
                };
                self.publish(endpoint.tenant, event).await;
            }
        }
        Ok(())
    }

    /// The operational event an attempt's recorded result calls for, if any: `failing`
    /// after the configured number of failures in a row of a delivery that goes on,
    /// `exhausted` when it failed for good. Never for a delivery of an operational
    /// message, so that a failing operational endpoint cannot feed itself.
    fn attempt_event(
        &self,
        message: &Message,
        attempt: &Attempt,
        at: Millis,
    ) -> Option<Operational> {
        if operational::is_reserved(&message.event_type) {
            return None;
        }
        let (message_id, endpoint_id, event_type) =
            (message.id, attempt.endpoint, message.event_type.clone());
        let (attempts, last_status, last_error) =
            (attempt.number, attempt.status_code, attempt.error.clone());
        match attempt.outcome {
            AttemptOutcome::Failed => Some(Operational::AttemptExhausted {
                message: message_id,
                endpoint: endpoint_id,
                event_type,
                attempts,
                last_status,
                last_error,
                at,
            }),
            AttemptOutcome::Retrying if self.config.failing_after == Some(attempts) => {
                Some(Operational::AttemptFailing {
                    message: message_id,
                    endpoint: endpoint_id,
                    event_type,
                    attempts,
                    last_status,
                    last_error,
                    at,
                })
            }
            _ => None,
        }
    }

    async fn publish(&self, tenant: TenantId, event: Operational) {
        operational::publish(self.queue.as_ref(), tenant, event).await;
    }

    /// Puts off an attempt over its endpoint's rate limit or share: a new task for the same
    /// attempt goes back on the queue with the wait (plus up to `jitter`, so that the tasks
    /// put off together come back spread out), and this one is done. Nothing is recorded,
    /// so the attempt keeps its number. (Re-queued rather than released: a released message
    /// counts a receive towards the dead-letter redrive each time, and on SQS it would come
    /// back only after the whole visibility timeout.)
    async fn hold_back(
        &self,
        message: &Message,
        endpoint: EndpointId,
        expect: u32,
        wait: Duration,
        jitter: Duration,
    ) -> Result<Step> {
        let jitter = rand::random_range(0..=jitter.as_millis() as u64);
        let not_before = self.clock.now() + wait.as_millis() as Millis + jitter as Millis;
        tracing::debug!(message = %message.id, %endpoint, ?wait, "over the endpoint's rate limit or share; put off");
        self.enqueue(vec![AttemptTask::new(
            message.id,
            endpoint,
            message.tenant,
            expect,
            not_before,
        )])
        .await?;
        Ok(Step::Settled)
    }

    async fn enqueue(&self, tasks: Vec<AttemptTask>) -> Result<()> {
        let now = self.clock.now();
        let max = self.queue.max_delay();
        let outgoing = tasks
            .into_iter()
            .map(|t| {
                let wait = Duration::from_millis((t.not_before - now).max(0) as u64);
                Outgoing {
                    body: Task::Attempt(t).to_body(),
                    delay: wait.min(max),
                }
            })
            .collect();
        // A task the queue did not take fails the step, which comes back and queues them
        // all again: the copies of those taken are harmless, as each attempt is claimed.
        Ok(self.queue.send(outgoing).await?)
    }
}

/// An event ready to store: its message, and the endpoints it goes to as read for it.
struct Admitted {
    message: Message,
    endpoints: Vec<Endpoint>,
}

/// What keeps attempt `expect + 1` of a delivery from being made now, if anything.
fn blocked(delivery: &Delivery, expect: u32, now: Millis) -> Option<Step> {
    if delivery.status.is_final() || delivery.attempts > expect {
        // Settled, or this attempt was made already (its successor was queued before its
        // result was recorded).
        return Some(Step::Settled);
    }
    if delivery.attempts < expect {
        // The attempt before this one queued this task and has not recorded its result
        // yet: its worker is still at it, or died and that attempt's own task comes back
        // to make it again. Dropping this task could lose the retry.
        return Some(Step::Busy(PREDECESSOR_WAIT));
    }
    delivery
        .lease_until
        .filter(|until| *until > now)
        .map(|until| Step::Busy(wait_until(until, now)))
}

fn wait_until(until: Millis, now: Millis) -> Duration {
    Duration::from_millis(until.saturating_sub(now).max(0) as u64)
}

/// Combines the steps of a fan-out: the task is done when every delivery is settled.
fn merge(steps: Vec<Result<Step>>) -> Result<Step> {
    let mut busy: Option<Duration> = None;
    let mut fault = None;
    for s in steps {
        match s {
            Ok(Step::Settled) => {}
            Ok(Step::Busy(d)) => busy = Some(busy.map_or(d, |b| b.min(d))),
            Err(e) => fault = Some(e),
        }
    }
    match (fault, busy) {
        (Some(e), _) => Err(e),
        (None, Some(d)) => Ok(Step::Busy(d)),
        (None, None) => Ok(Step::Settled),
    }
}
