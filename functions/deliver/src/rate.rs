//! Per-endpoint rate limits: one keyed GCRA limiter (`governor`) per distinct rate, keyed
//! by endpoint. A request over its endpoint's rate is not made and its task is put back on
//! the queue for later, so a limited endpoint never holds a worker slot while it waits.
//!
//! The limit is kept in this process's memory: it holds per worker process (in local
//! mode, for the whole deployment; on Lambda, per concurrent instance of the deliver
//! function, so N instances may together send up to N times the rate).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hookline_core::ids::EndpointId;

/// Checks between two sweeps of keys that have not been limited lately.
const SWEEP_EVERY: u64 = 10_000;

#[derive(Default)]
pub struct RateLimits {
    limiters: Mutex<HashMap<NonZeroU32, Arc<DefaultKeyedRateLimiter<EndpointId>>>>,
    checks: AtomicU64,
}

impl RateLimits {
    /// Takes one request of `per_second` (bursts up to `per_second`) for the endpoint:
    /// `None` if it may go now, else how long until it may.
    pub fn check(&self, endpoint: EndpointId, per_second: u32) -> Option<Duration> {
        let rate = NonZeroU32::new(per_second)?;
        let limiter = {
            let mut limiters = self.lock();
            limiters
                .entry(rate)
                .or_insert_with(|| Arc::new(RateLimiter::keyed(Quota::per_second(rate))))
                .clone()
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        match limiter.check_key(&endpoint) {
            Ok(()) => None,
            Err(not_until) => Some(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// Forgets endpoints whose limiter state is back to full, and limiters left empty.
    fn sweep(&self) {
        let mut limiters = self.lock();
        limiters.retain(|_, limiter| {
            limiter.retain_recent();
            limiter.shrink_to_fit();
            !limiter.is_empty()
        });
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<NonZeroU32, Arc<DefaultKeyedRateLimiter<EndpointId>>>>
    {
        // The map holds no invariant a panic could break.
        self.limiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_endpoint_on_its_own() {
        let limits = RateLimits::default();
        let (a, b) = (EndpointId::new(), EndpointId::new());
        // A burst of the rate goes through, the next one must wait.
        for _ in 0..3 {
            assert_eq!(limits.check(a, 3), None);
        }
        let wait = limits.check(a, 3).expect("over the rate");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(334),
            "{wait:?}"
        );
        // Another endpoint at the same rate has its own budget.
        assert_eq!(limits.check(b, 3), None);
        // A limit of 0 is no limit.
        assert_eq!(limits.check(a, 0), None);
    }
}
