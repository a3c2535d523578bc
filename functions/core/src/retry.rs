//! The retry policy: a schedule of delays (the first is the wait before the first try),
//! jitter so retries of many messages do not arrive together, and `Retry-After` honoured
//! within bounds.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rand::Rng;

/// The default: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub const DEFAULT_SCHEDULE: &str = "0s,5s,5m,30m,2h,5h,10h,10h";
/// A receiver may ask to wait at most this long with `Retry-After`.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);
/// Delays are spread by up to ±this fraction.
const JITTER: f64 = 0.1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSchedule(String);

impl fmt::Display for InvalidSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid retry schedule: {}", self.0)
    }
}

impl std::error::Error for InvalidSchedule {}

impl FromStr for RetrySchedule {
    type Err = InvalidSchedule;

    /// Comma-separated durations such as `0s,5s,5m,2h`.
    fn from_str(s: &str) -> Result<Self, InvalidSchedule> {
        let delays = s
            .split(',')
            .map(str::trim)
            .map(|part| {
                humantime::parse_duration(part)
                    .map_err(|e| InvalidSchedule(format!("{part:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.is_empty() || delays.len() > 50 {
            return Err(InvalidSchedule("between 1 and 50 delays are needed".into()));
        }
        Ok(RetrySchedule(delays))
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        DEFAULT_SCHEDULE
            .parse()
            .expect("the default schedule parses")
    }
}

impl RetrySchedule {
    /// How many tries a delivery gets in all.
    pub fn attempts(&self) -> u32 {
        self.0.len() as u32
    }

    /// The wait before the first try.
    pub fn initial_delay(&self) -> Duration {
        self.0[0]
    }

    /// The wait after `completed` failed tries before the next one, with jitter and a
    /// receiver's `Retry-After` taken into account; `None` when the schedule is exhausted.
    pub fn next_delay(&self, completed: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let base = *self.0.get(completed as usize)?;
        let jittered = jitter(base);
        Some(match retry_after {
            Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
            None => jittered,
        })
    }
}

fn jitter(d: Duration) -> Duration {
    if d.is_zero() {
        return d;
    }
    let factor = rand::rng().random_range((1.0 - JITTER)..=(1.0 + JITTER));
    d.mul_f64(factor)
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_default_schedule() {
        let s = RetrySchedule::default();
        assert_eq!(s.attempts(), 8);
        assert_eq!(s.initial_delay(), Duration::ZERO);
        assert_eq!(s.0[2], Duration::from_secs(300));
        assert_eq!(s.0[7], Duration::from_secs(36_000));
    }

    #[test]
    fn rejects_bad_schedules() {
        assert!("".parse::<RetrySchedule>().is_err());
        assert!("5s,soon".parse::<RetrySchedule>().is_err());
        assert!("-5s".parse::<RetrySchedule>().is_err());
    }

    #[test]
    fn delays_are_jittered_within_ten_percent_and_end_with_the_schedule() {
        let s: RetrySchedule = "0s,10s,100s".parse().unwrap();
        for _ in 0..200 {
            let d = s.next_delay(1, None).unwrap();
            assert!(
                d >= Duration::from_secs(9) && d <= Duration::from_secs(11),
                "{d:?}"
            );
        }
        assert!(s.next_delay(2, None).is_some());
        assert_eq!(s.next_delay(3, None), None);
    }

    #[test]
    fn retry_after_extends_the_wait_but_is_capped() {
        let s: RetrySchedule = "0s,1s,1s".parse().unwrap();
        let d = s.next_delay(1, Some(Duration::from_secs(120))).unwrap();
        assert_eq!(d, Duration::from_secs(120));
        let capped = s
            .next_delay(1, Some(Duration::from_secs(10 * 86_400)))
            .unwrap();
        assert_eq!(capped, MAX_RETRY_AFTER);
        let shorter = s.next_delay(1, Some(Duration::ZERO)).unwrap();
        assert!(shorter >= Duration::from_millis(900));
    }

    #[test]
    fn parses_retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("30", now), Some(Duration::from_secs(30)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(90)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
