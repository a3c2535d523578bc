//! What a receiver's answer means, beside the retry policy that acts on it: success,
//! a permanent failure, or a failure to try again (and when), and how the endpoint's
//! health moves with it (failing since, recovered, disabled). Delivery, test sends and
//! anything later read answers through these, so the rules live in one place.

use std::time::Duration;

use crate::model::{AttemptOutcome, DeliveryStatus, Endpoint, HealthChange, Millis};
use crate::retry::RetrySchedule;

/// Whether an HTTP status is a success (2xx).
pub fn is_success(status: Option<u16>) -> bool {
    status.is_some_and(|s| (200..300).contains(&s))
}

/// Whether an answer refuses the message for good (406, Mailgun's convention, and 410):
/// no retry follows, whatever is left of the schedule.
pub fn refused_for_good(status: Option<u16>) -> bool {
    matches!(status, Some(406) | Some(410))
}

/// The class of an attempt's outcome, as the `outcome` label of the delivery metrics
/// gives it: the receiver's status class (429 apart: the receiver asks to slow down), or
/// why no status came (`error` as the HTTP client names it: the URL policy refused the
/// address, the TLS handshake failed, the request timed out, or the connection failed).
/// A handful of values, so that alarms can address each.
pub fn outcome_class(status: Option<u16>, error: Option<&str>) -> &'static str {
    match status {
        Some(429) => "rate_limited",
        Some(s) if (200..300).contains(&s) => "2xx",
        Some(s) if s >= 500 => "5xx",
        // 1xx and 3xx are not followed: the receiver did not take the message, as a 4xx.
        Some(_) => "4xx",
        None => match error {
            Some("blocked") => "url_policy",
            Some("tls") => "tls",
            Some("timeout") => "timeout",
            _ => "connect",
        },
    }
}

/// How one attempt ended and what follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: AttemptOutcome,
    /// The wait before the next attempt, when there is one.
    pub next_delay: Option<Duration>,
}

impl Verdict {
    /// Reads the answer to attempt `number` (1 for the first): 2xx succeeds; 406
    /// (Mailgun's convention) and 410 fail for good; anything else, a timeout or a
    /// connection failure included, is tried again on the schedule until it is exhausted,
    /// waiting at least what a 429 or 503 asks with `Retry-After` (within bounds).
    pub fn of(
        status: Option<u16>,
        retry_after: Option<Duration>,
        number: u32,
        schedule: &RetrySchedule,
    ) -> Self {
        if is_success(status) {
            return Verdict {
                outcome: AttemptOutcome::Succeeded,
                next_delay: None,
            };
        }
        if refused_for_good(status) {
            return Verdict {
                outcome: AttemptOutcome::Failed,
                next_delay: None,
            };
        }
        let asked = match status {
            Some(429) | Some(503) => retry_after,
            _ => None,
        };
        match schedule.next_delay(number, asked) {
            Some(delay) => Verdict {
                outcome: AttemptOutcome::Retrying,
                next_delay: Some(delay),
            },
            None => Verdict {
                outcome: AttemptOutcome::Failed,
                next_delay: None,
            },
        }
    }

    pub fn succeeded(&self) -> bool {
        self.outcome == AttemptOutcome::Succeeded
    }

    /// The state the delivery is left in.
    pub fn delivery_status(&self) -> DeliveryStatus {
        match self.outcome {
            AttemptOutcome::Succeeded => DeliveryStatus::Succeeded,
            AttemptOutcome::Retrying => DeliveryStatus::Pending,
            AttemptOutcome::Failed => DeliveryStatus::Failed,
        }
    }
}

/// How an endpoint's health moves after an attempt, if it moves: the first failure after
/// a success marks it failing, a success clears that, a 410 disables it, and a failure
/// once it has failed every attempt for `disable_after` disables it. `None` when nothing
/// changes, so the store is written only on a change.
pub fn health_change(
    endpoint: &Endpoint,
    status: Option<u16>,
    now: Millis,
    disable_after: Option<Duration>,
) -> Option<HealthChange> {
    if is_success(status) {
        return endpoint.failing_since.map(|_| HealthChange::Recovered);
    }
    if status == Some(410) {
        return Some(HealthChange::Disable {
            reason: "the endpoint answered 410 Gone".into(),
            at: now,
        });
    }
    match (endpoint.failing_since, disable_after) {
        (None, _) => Some(HealthChange::Failing { at: now }),
        (Some(since), Some(after)) if now - since >= after.as_millis() as Millis => {
            Some(HealthChange::auto_disable(since, now))
        }
        (Some(_), _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::endpoint_to;
    use crate::ids::TenantId;

    fn schedule() -> RetrySchedule {
        "0s,1s,1s".parse().unwrap()
    }

    #[test]
    fn answers_are_classified() {
        let s = schedule();
        for code in [200, 201, 204, 299] {
            let v = Verdict::of(Some(code), None, 1, &s);
            assert_eq!((v.outcome, v.next_delay), (AttemptOutcome::Succeeded, None));
            assert_eq!(v.delivery_status(), DeliveryStatus::Succeeded);
        }
        for code in [406, 410] {
            let v = Verdict::of(Some(code), None, 1, &s);
            assert_eq!((v.outcome, v.next_delay), (AttemptOutcome::Failed, None));
        }
        for status in [Some(500), Some(404), Some(301), Some(429), None] {
            let v = Verdict::of(status, None, 1, &s);
            assert_eq!(v.outcome, AttemptOutcome::Retrying, "{status:?}");
            assert!(v.next_delay.is_some());
            assert_eq!(v.delivery_status(), DeliveryStatus::Pending);
        }
        let last = Verdict::of(Some(500), None, 3, &s);
        assert_eq!(
            (last.outcome, last.next_delay),
            (AttemptOutcome::Failed, None)
        );
    }

    #[test]
    fn outcomes_fall_in_the_metric_classes() {
        let cases = [
            (Some(200), None, "2xx"),
            (Some(204), Some("body_timeout"), "2xx"),
            (Some(404), None, "4xx"),
            (Some(410), None, "4xx"),
            (Some(302), None, "4xx"),
            (Some(429), None, "rate_limited"),
            (Some(500), None, "5xx"),
            (Some(503), None, "5xx"),
            (None, Some("blocked"), "url_policy"),
            (None, Some("tls"), "tls"),
            (None, Some("timeout"), "timeout"),
            (None, Some("connect"), "connect"),
            (None, Some("request"), "connect"),
        ];
        for (status, error, class) in cases {
            assert_eq!(outcome_class(status, error), class, "{status:?} {error:?}");
        }
    }

    #[test]
    fn retry_after_is_honoured_for_429_and_503_only() {
        let s = schedule();
        let asked = Some(Duration::from_secs(120));
        for code in [429, 503] {
            let v = Verdict::of(Some(code), asked, 1, &s);
            assert_eq!(v.next_delay, Some(Duration::from_secs(120)), "{code}");
        }
        let v = Verdict::of(Some(500), asked, 1, &s);
        assert!(v.next_delay.unwrap() < Duration::from_secs(2));
    }

    #[test]
    fn health_moves_only_on_a_change() {
        let day = Duration::from_secs(86_400);
        let mut e = endpoint_to(TenantId::new(), "https://example.com/", None);
        assert_eq!(health_change(&e, Some(200), 5, Some(day)), None);
        assert_eq!(
            health_change(&e, Some(500), 5, Some(day)),
            Some(HealthChange::Failing { at: 5 })
        );
        e.failing_since = Some(5);
        assert_eq!(health_change(&e, None, 6, Some(day)), None);
        assert_eq!(
            health_change(&e, Some(204), 7, Some(day)),
            Some(HealthChange::Recovered)
        );
        let later = 5 + day.as_millis() as Millis;
        assert!(matches!(
            health_change(&e, Some(500), later, Some(day)),
            Some(HealthChange::Disable { .. })
        ));
        assert_eq!(
            health_change(&e, Some(500), later, None),
            None,
            "never disabled when the period is off"
        );
        assert!(matches!(
            health_change(&e, Some(410), 6, None),
            Some(HealthChange::Disable { .. })
        ));
    }
}
