//! Per-endpoint shares of the requests in flight: no endpoint may hold more than its share
//! of the worker's request slots, so a receiver that stops answering (each request then
//! waits out the timeout) cannot take them all and stall every other endpoint.
//!
//! A request over its endpoint's share waits a moment in memory for one of the endpoint's
//! requests to end, which is all a busy endpoint that answers needs. If none ends by then,
//! the request is not made: its task is put back on the queue, as a rate-limited one is,
//! and holds no slot while it waits. It is put off for about as long as the endpoint has
//! gone without ending a request, up to the request timeout, so that the backlog of an
//! endpoint that has stopped answering is not read again and again for nothing.
//!
//! Kept in this process's memory, like the rate limits: in local mode for the whole
//! deployment, in the deliver function on Lambda for each instance (its request limit,
//! `HOOKLINE_CONCURRENCY`, bounds one invocation at a time).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookline_core::ids::EndpointId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long a request over its endpoint's share waits in memory for a slot.
pub const IN_MEMORY_WAIT: Duration = Duration::from_millis(50);
/// The shortest a request is put off once it has waited that long.
pub const MIN_WAIT: Duration = Duration::from_millis(100);
/// Takes between two sweeps of the endpoints with nothing in flight.
const SWEEP_EVERY: u64 = 10_000;

pub struct Shares {
    /// Requests in flight one endpoint may have.
    share: usize,
    /// The longest a request over its share is put off.
    max_wait: Duration,
    started: Instant,
    endpoints: Mutex<HashMap<EndpointId, Arc<EndpointShare>>>,
    takes: AtomicU64,
}

struct EndpointShare {
    slots: Arc<Semaphore>,
    /// When (ms after `Shares::started`) a request to the endpoint last ended, or its
    /// first request in flight started.
    progress: AtomicU64,
}

/// One request in flight to an endpoint, given back when dropped.
pub struct Slot {
    endpoint: Arc<EndpointShare>,
    started: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Shares {
    /// `share` requests in flight per endpoint; one over it is put off for at most
    /// `max_wait` (the request timeout: by then every request in flight has ended).
    pub fn new(share: usize, max_wait: Duration) -> Self {
        Shares {
            share: share.clamp(1, Semaphore::MAX_PERMITS),
            max_wait: max_wait.max(MIN_WAIT),
            started: Instant::now(),
            endpoints: Mutex::new(HashMap::new()),
            takes: AtomicU64::new(0),
        }
    }

    /// A slot for one request to `endpoint`, or, when it has its share in flight and none
    /// of them ends within [`IN_MEMORY_WAIT`], how long to put the request off.
    pub async fn take(&self, endpoint: EndpointId) -> Result<Slot, Duration> {
        let share = self.endpoint(endpoint);
        if share.slots.available_permits() == self.share {
            // Nothing in flight: the endpoint's clock starts now.
            share.progress.store(self.now_ms(), Ordering::Relaxed);
        }
        let acquired = match Arc::clone(&share.slots).try_acquire_owned() {
            Ok(permit) => Ok(Ok(permit)),
            Err(_) => {
                let slot = Arc::clone(&share.slots).acquire_owned();
                tokio::time::timeout(IN_MEMORY_WAIT, slot).await
            }
        };
        match acquired {
            Ok(Ok(permit)) => Ok(Slot {
                endpoint: share,
                started: self.started,
                _permit: permit,
            }),
            _ => {
                let since = self
                    .now_ms()
                    .saturating_sub(share.progress.load(Ordering::Relaxed));
                Err(Duration::from_millis(since).clamp(MIN_WAIT, self.max_wait))
            }
        }
    }

    /// Requests in flight to `endpoint`.
    pub fn in_flight(&self, endpoint: EndpointId) -> usize {
        self.lock()
            .get(&endpoint)
            .map_or(0, |e| self.share - e.slots.available_permits())
    }

    fn endpoint(&self, endpoint: EndpointId) -> Arc<EndpointShare> {
        let mut endpoints = self.lock();
        if self.takes.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // Held by no slot and no waiter: nothing in flight, nothing to remember.
            endpoints.retain(|_, e| Arc::strong_count(e) > 1);
        }
        let share = endpoints.entry(endpoint).or_insert_with(|| {
            Arc::new(EndpointShare {
                slots: Arc::new(Semaphore::new(self.share)),
                progress: AtomicU64::new(0),
            })
        });
        Arc::clone(share)
    }

    fn now_ms(&self) -> u64 {
        ms_since(self.started)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointId, Arc<EndpointShare>>> {
        // The map holds no invariant a panic could break halfway.
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn ms_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.endpoint
            .progress
            .store(ms_since(self.started), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_gets_its_share_and_no_more_and_others_are_not_counted_against_it() {
        let shares = Shares::new(2, Duration::from_secs(15));
        let (a, b) = (EndpointId::new(), EndpointId::new());
        let first = shares.take(a).await.expect("first slot");
        let second = shares.take(a).await.expect("second slot");
        let before = Instant::now();
        assert!(
            shares.take(a).await.is_err(),
            "a third request is over the share"
        );
        assert_eq!(before.elapsed(), IN_MEMORY_WAIT, "after waiting a moment");
        let other = shares.take(b).await;
        assert!(other.is_ok(), "another endpoint has its own share");
        drop(first);
        assert_eq!(shares.in_flight(a), 1);
        let again = shares.take(a).await;
        assert!(again.is_ok(), "an ended request gives its slot back");
        drop((second, again, other));
        assert_eq!(shares.in_flight(a), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_over_the_share_gets_a_slot_that_ends_while_it_waits() {
        let shares = Arc::new(Shares::new(1, Duration::from_secs(15)));
        let a = EndpointId::new();
        let held = shares.take(a).await.expect("slot");
        let waiter = tokio::spawn({
            let shares = Arc::clone(&shares);
            async move { shares.take(a).await.is_ok() }
        });
        tokio::time::sleep(IN_MEMORY_WAIT / 2).await;
        drop(held);
        assert!(waiter.await.unwrap(), "the freed slot went to the waiter");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_put_off_waits_about_as_long_as_the_endpoint_has_gone_without_an_answer() {
        let max = Duration::from_secs(15);
        let shares = Shares::new(1, max);
        let a = EndpointId::new();
        let held = shares.take(a).await.expect("slot");
        let wait = shares.take(a).await.err().expect("over the share");
        assert_eq!(wait, MIN_WAIT, "just started: the shortest wait");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let wait = shares.take(a).await.err().expect("over the share");
        assert_eq!(wait, Duration::from_secs(3) + 2 * IN_MEMORY_WAIT);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let wait = shares.take(a).await.err().expect("over the share");
        assert_eq!(wait, max, "never past the request timeout");
        drop(held);
        let another = shares.take(a).await.expect("slot given back");
        assert_eq!(
            shares.take(a).await.err().expect("over the share"),
            MIN_WAIT,
            "a request that ended is progress"
        );
        drop(another);
    }
}
