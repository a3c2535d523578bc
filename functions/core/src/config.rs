//! Settings shared by every entrypoint. Each binary fills them from its environment;
//! nothing here names a host, region or account.

use std::sync::Arc;
use std::time::Duration;

use crate::retry::RetrySchedule;
use crate::urlpolicy::UrlPolicy;

/// Largest accepted event payload (serialized JSON) by default: 256 KiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 256 * 1024;
/// Most events in one publish request.
pub const MAX_BATCH: usize = 100;
/// Endpoints a tenant may have, by default.
pub const DEFAULT_MAX_ENDPOINTS: usize = 1_000;
/// How long an endpoint may fail every attempt before it is disabled, by default.
pub const DEFAULT_DISABLE_AFTER: Duration = Duration::from_secs(5 * 24 * 3600);

/// Reads an auto-disable period: a humantime duration, or `off`/`0` for never.
pub fn parse_disable_after(s: &str) -> Result<Option<Duration>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") || s == "0" {
        return Ok(None);
    }
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    Ok((!d.is_zero()).then_some(d))
}

#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub url_policy: Arc<UrlPolicy>,
    pub retry: RetrySchedule,
    pub max_payload: usize,
    /// Whole-request timeout of one delivery attempt.
    pub request_timeout: Duration,
    /// How long an idempotency key maps to its first message.
    pub idempotency_ttl: Duration,
    /// How long a rotated-out secret keeps signing.
    pub secret_grace: Duration,
    /// An endpoint whose attempts have all failed for this long is disabled automatically;
    /// `None` never disables one.
    pub disable_after: Option<Duration>,
    /// The most endpoints a tenant may have.
    pub max_endpoints: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            url_policy: Arc::new(UrlPolicy::default()),
            retry: RetrySchedule::default(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            request_timeout: Duration::from_secs(15),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            secret_grace: Duration::from_secs(24 * 3600),
            disable_after: Some(DEFAULT_DISABLE_AFTER),
            max_endpoints: DEFAULT_MAX_ENDPOINTS,
        }
    }
}

impl CoreConfig {
    /// How long a worker may hold a delivery before another may take it over: one request
    /// plus a margin. Queue visibility timeouts must be longer than this.
    pub fn lease(&self) -> Duration {
        self.request_timeout + Duration::from_secs(15)
    }
}

/// Reads a variable, treating an empty value as unset.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl CoreConfig {
    /// The settings of a Lambda function, from the `HOOKLINE_*` variables the template sets:
    /// `HOOKLINE_RETRY_SCHEDULE`, `HOOKLINE_ALLOW_HTTP`, `HOOKLINE_ALLOWED_NETWORKS`,
    /// `HOOKLINE_REQUEST_TIMEOUT`, `HOOKLINE_DISABLE_AFTER`. Unset ones keep their defaults.
    pub fn from_env() -> Result<Self, String> {
        let mut cfg = CoreConfig::default();
        if let Some(s) = var("HOOKLINE_RETRY_SCHEDULE") {
            cfg.retry = s
                .parse()
                .map_err(|e| format!("HOOKLINE_RETRY_SCHEDULE: {e}"))?;
        }
        let allow_http = match var("HOOKLINE_ALLOW_HTTP").as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => return Err(format!("HOOKLINE_ALLOW_HTTP: {other:?} is not true/false")),
        };
        let networks = match var("HOOKLINE_ALLOWED_NETWORKS") {
            Some(s) => UrlPolicy::parse_networks(&s)
                .map_err(|e| format!("HOOKLINE_ALLOWED_NETWORKS: {e}"))?,
            None => Vec::new(),
        };
        cfg.url_policy = Arc::new(UrlPolicy {
            allow_http,
            allowed_networks: networks,
        });
        if let Some(s) = var("HOOKLINE_REQUEST_TIMEOUT") {
            cfg.request_timeout = humantime::parse_duration(&s)
                .map_err(|e| format!("HOOKLINE_REQUEST_TIMEOUT: {e}"))?;
        }
        if let Some(s) = var("HOOKLINE_MAX_ENDPOINTS") {
            cfg.max_endpoints = s
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    format!("HOOKLINE_MAX_ENDPOINTS: {s:?} is not a whole number of at least 1")
                })?;
        }
        if let Some(s) = var("HOOKLINE_DISABLE_AFTER") {
            cfg.disable_after =
                parse_disable_after(&s).map_err(|e| format!("HOOKLINE_DISABLE_AFTER: {e}"))?;
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disable_after_reads_durations_and_off() {
        assert_eq!(
            parse_disable_after("5d"),
            Ok(Some(Duration::from_secs(5 * 86_400)))
        );
        assert_eq!(
            parse_disable_after("90s"),
            Ok(Some(Duration::from_secs(90)))
        );
        assert_eq!(parse_disable_after("off"), Ok(None));
        assert_eq!(parse_disable_after("0"), Ok(None));
        assert_eq!(parse_disable_after("0s"), Ok(None));
        assert!(parse_disable_after("soon").is_err());
        assert_eq!(
            CoreConfig::default().disable_after,
            Some(DEFAULT_DISABLE_AFTER)
        );
    }
}
