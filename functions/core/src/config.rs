//! Settings shared by every entrypoint. Each binary fills them from its environment;
//! nothing here names a host, region or account.

use std::sync::Arc;
use std::time::Duration;

use crate::credentials::CredentialsKey;
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
    let d = parse_duration(s)?;
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
    /// After this many failed attempts in a row, a delivery that will be tried again
    /// publishes `hookline.message.attempt.failing`; `None` never does.
    pub failing_after: Option<u32>,
    pub portal: PortalConfig,
    /// Seals endpoints' receiver credentials; `None`: endpoints cannot be given `auth`
    /// (and sealed ones are not opened).
    pub credentials_key: Option<CredentialsKey>,
}

/// How the tenant portal looks and how long its links and sessions last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalConfig {
    /// The name in the title bar and the page titles.
    pub title: String,
    /// An `https` (or `http`) image shown beside the title.
    pub logo_url: Option<String>,
    /// `#rrggbb`: links, buttons and the navigation bar's marker.
    pub accent: String,
    /// CSP `frame-ancestors` sources: who may put the portal in a frame (`'none'`: no one).
    pub frame_ancestors: String,
    /// How long a magic link may be opened.
    pub link_ttl: Duration,
    /// How long a session lasts after its link is opened.
    pub session_ttl: Duration,
    /// Where magic links point (`https://hooks.example.com`); unset: the host the request
    /// creating the link was sent to.
    pub base_url: Option<String>,
}

impl Default for PortalConfig {
    fn default() -> Self {
        PortalConfig {
            title: "Webhooks".into(),
            logo_url: None,
            accent: "#2f6fde".into(),
            frame_ancestors: "'none'".into(),
            link_ttl: Duration::from_secs(10 * 60),
            session_ttl: Duration::from_secs(24 * 3600),
            base_url: None,
        }
    }
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
            portal: PortalConfig::default(),
            failing_after: Some(crate::operational::DEFAULT_FAILING_AFTER),
            credentials_key: None,
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

/// The `HOOKLINE_*` settings both shapes read: local mode from its flags or environment,
/// a Lambda function from its environment. Each is parsed here, by one rule, whoever
/// reads it.
pub mod names {
    pub const RETRY_SCHEDULE: &str = "HOOKLINE_RETRY_SCHEDULE";
    pub const ALLOW_HTTP: &str = "HOOKLINE_ALLOW_HTTP";
    pub const ALLOWED_NETWORKS: &str = "HOOKLINE_ALLOWED_NETWORKS";
    pub const REQUEST_TIMEOUT: &str = "HOOKLINE_REQUEST_TIMEOUT";
    pub const DISABLE_AFTER: &str = "HOOKLINE_DISABLE_AFTER";
    pub const MAX_ENDPOINTS: &str = "HOOKLINE_MAX_ENDPOINTS";
    pub const CONCURRENCY: &str = "HOOKLINE_CONCURRENCY";
    pub const RETENTION_DAYS: &str = "HOOKLINE_RETENTION_DAYS";
    pub const RETENTION: &str = "HOOKLINE_RETENTION";
    pub const PORTAL_TITLE: &str = "HOOKLINE_PORTAL_TITLE";
    pub const PORTAL_LOGO_URL: &str = "HOOKLINE_PORTAL_LOGO_URL";
    pub const PORTAL_ACCENT: &str = "HOOKLINE_PORTAL_ACCENT";
    pub const PORTAL_FRAME_ANCESTORS: &str = "HOOKLINE_PORTAL_FRAME_ANCESTORS";
    pub const PORTAL_LINK_TTL: &str = "HOOKLINE_PORTAL_LINK_TTL";
    pub const PORTAL_SESSION_TTL: &str = "HOOKLINE_PORTAL_SESSION_TTL";
    pub const PORTAL_BASE_URL: &str = "HOOKLINE_PORTAL_BASE_URL";
    pub const FAILING_AFTER: &str = "HOOKLINE_FAILING_AFTER";
    pub const CREDENTIALS_KEY: &str = "HOOKLINE_CREDENTIALS_KEY";
}

/// Delivery requests in flight at most, by default.
pub const DEFAULT_CONCURRENCY: usize = 256;
/// The most `HOOKLINE_CONCURRENCY` may be.
pub const MAX_CONCURRENCY: usize = 65_536;
/// How long the log is kept by default (the template's default too).
pub const DEFAULT_RETENTION_DAYS: u64 = 30;

/// The shortest retention a deployment's queue allows, in days: the log must outlive every
/// copy of an event the queue may still hand over, or that copy would find its message
/// gone and be delivered again, and it must cover the idempotency window (a day).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionFloor(pub u64);

impl RetentionFloor {
    /// SQS keeps a message up to 14 days.
    pub const SQS: RetentionFloor = RetentionFloor(15);
    /// The embedded queue keeps a message until it is handled, and local mode's retention
    /// keeps every message a queued task names: only the idempotency window is left.
    pub const EMBEDDED: RetentionFloor = RetentionFloor(1);
}

/// Everything the `HOOKLINE_*` settings decide that both shapes share.
#[derive(Debug, Clone)]
pub struct Settings {
    pub core: CoreConfig,
    /// Delivery requests in flight at most: local mode's worker, or one invocation of the
    /// deliver function.
    pub concurrency: usize,
    /// How long messages, deliveries and attempts are kept; `None`: for ever.
    pub retention: Option<Duration>,
}

impl Settings {
    /// Parses the settings `get` gives by name (unset or blank: the default). Errors name
    /// the setting.
    pub fn parse(
        get: &dyn Fn(&str) -> Option<String>,
        floor: RetentionFloor,
    ) -> Result<Settings, String> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let named = |name: &str, e: String| format!("{name}: {e}");
        let mut core = CoreConfig::default();
        if let Some(s) = get(names::RETRY_SCHEDULE) {
            core.retry = s.parse().map_err(|e: crate::retry::InvalidSchedule| {
                named(names::RETRY_SCHEDULE, e.to_string())
            })?;
        }
        let allow_http = match get(names::ALLOW_HTTP) {
            None => false,
            Some(s) => parse_bool(&s).map_err(|e| named(names::ALLOW_HTTP, e))?,
        };
        let allowed_networks = match get(names::ALLOWED_NETWORKS) {
            None => Vec::new(),
            Some(s) => {
                UrlPolicy::parse_networks(&s).map_err(|e| named(names::ALLOWED_NETWORKS, e))?
            }
        };
        core.url_policy = Arc::new(UrlPolicy {
            allow_http,
            allowed_networks,
        });
        if let Some(s) = get(names::REQUEST_TIMEOUT) {
            core.request_timeout = parse_duration(&s)
                .and_then(|d| {
                    (!d.is_zero())
                        .then_some(d)
                        .ok_or_else(|| "must be longer than 0".to_string())
                })
                .map_err(|e| named(names::REQUEST_TIMEOUT, e))?;
        }
        if let Some(s) = get(names::DISABLE_AFTER) {
            core.disable_after =
                parse_disable_after(&s).map_err(|e| named(names::DISABLE_AFTER, e))?;
        }
        if let Some(s) = get(names::MAX_ENDPOINTS) {
            core.max_endpoints =
                parse_count(&s, 1, usize::MAX).map_err(|e| named(names::MAX_ENDPOINTS, e))?;
        }
        core.portal = parse_portal(&get)?;
        if let Some(s) = get(names::FAILING_AFTER) {
            core.failing_after = if s.trim().eq_ignore_ascii_case("off") {
                None
            } else {
                let n = parse_count(&s, 1, u32::MAX as usize)
                    .map_err(|e| named(names::FAILING_AFTER, format!("{e}, or `off`")))?;
                Some(n as u32)
            };
        }
        if let Some(s) = get(names::CREDENTIALS_KEY) {
            core.credentials_key =
                Some(CredentialsKey::parse(&s).map_err(|e| named(names::CREDENTIALS_KEY, e))?);
        }
        let concurrency = match get(names::CONCURRENCY) {
            None => DEFAULT_CONCURRENCY,
            Some(s) => {
                parse_count(&s, 1, MAX_CONCURRENCY).map_err(|e| named(names::CONCURRENCY, e))?
            }
        };
        let retention = parse_retention(
            get(names::RETENTION_DAYS).as_deref(),
            get(names::RETENTION).as_deref(),
            floor,
        )?;
        Ok(Settings {
            core,
            concurrency,
            retention,
        })
    }

    /// The settings from the process's environment.
    pub fn from_env(floor: RetentionFloor) -> Result<Settings, String> {
        Settings::parse(&|name| std::env::var(name).ok(), floor)
    }
}

/// The portal's settings. Each ends up in a header or a page, so each is held to a shape
/// that cannot break out of it (no `;` in a CSP source, no quote in a colour).
fn parse_portal(get: &dyn Fn(&str) -> Option<String>) -> Result<PortalConfig, String> {
    let named = |name: &str, e: &str| format!("{name}: {e}");
    let mut portal = PortalConfig::default();
    if let Some(title) = get(names::PORTAL_TITLE) {
        let title = title.trim();
        if title.chars().count() > 80 || title.chars().any(char::is_control) {
            return Err(named(
                names::PORTAL_TITLE,
                "at most 80 characters, no control characters",
            ));
        }
        portal.title = title.to_string();
    }
    let web_url = |name: &str, s: &str| -> Result<String, String> {
        let parsed = url::Url::parse(s.trim()).map_err(|e| named(name, &e.to_string()))?;
        if !matches!(parsed.scheme(), "https" | "http") {
            return Err(named(name, "must be an https:// or http:// URL"));
        }
        Ok(parsed.to_string())
    };
    if let Some(logo) = get(names::PORTAL_LOGO_URL) {
        portal.logo_url = Some(web_url(names::PORTAL_LOGO_URL, &logo)?);
    }
    if let Some(base) = get(names::PORTAL_BASE_URL) {
        let base = web_url(names::PORTAL_BASE_URL, &base)?;
        portal.base_url = Some(base.trim_end_matches('/').to_string());
    }
    if let Some(accent) = get(names::PORTAL_ACCENT) {
        let accent = accent.trim();
        let hex = accent.strip_prefix('#').unwrap_or_default();
        if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(named(names::PORTAL_ACCENT, "a colour as #rrggbb"));
        }
        portal.accent = accent.to_ascii_lowercase();
    }
    if let Some(sources) = get(names::PORTAL_FRAME_ANCESTORS) {
        let sources = sources.split_whitespace().collect::<Vec<_>>().join(" ");
        if sources
            .chars()
            .any(|c| matches!(c, ';' | ',' | '"') || !c.is_ascii_graphic() && c != ' ')
        {
            return Err(named(
                names::PORTAL_FRAME_ANCESTORS,
                "space-separated CSP sources such as `https://app.example.com 'self'`",
            ));
        }
        portal.frame_ancestors = sources;
    }
    let ttl = |name: &str| -> Result<Option<Duration>, String> {
        get(name)
            .map(|s| {
                parse_duration(&s)
                    .and_then(|d| {
                        (!d.is_zero())
                            .then_some(d)
                            .ok_or_else(|| "must be longer than 0".to_string())
                    })
                    .map_err(|e| named(name, &e))
            })
            .transpose()
    };
    if let Some(d) = ttl(names::PORTAL_LINK_TTL)? {
        portal.link_ttl = d;
    }
    if let Some(d) = ttl(names::PORTAL_SESSION_TTL)? {
        portal.session_ttl = d;
    }
    Ok(portal)
}

/// `true`/`false` (also `1`/`0`), in any case.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

/// A duration such as `15s`, `500ms` or `5m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e}"))
}

/// A whole number from `min` to `max`.
fn parse_count(s: &str, min: usize, max: usize) -> Result<usize, String> {
    s.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            if max == usize::MAX {
                format!("{s:?} is not a whole number of at least {min}")
            } else {
                format!("{s:?} is not a whole number from {min} to {max}")
            }
        })
}

/// The retention: `days` (`HOOKLINE_RETENTION_DAYS`: a whole number of days, at least the
/// floor, or `off` to keep the log for ever; [`DEFAULT_RETENTION_DAYS`] when unset), unless
/// `exact` (`HOOKLINE_RETENTION`, for tests and benchmarks: a duration that takes the
/// place of the days, without their floor) is given.
pub fn parse_retention(
    days: Option<&str>,
    exact: Option<&str>,
    floor: RetentionFloor,
) -> Result<Option<Duration>, String> {
    if let Some(exact) = exact {
        let d = parse_duration(exact).map_err(|e| format!("{}: {e}", names::RETENTION))?;
        if d.is_zero() {
            return Err(format!(
                "{}: must be longer than 0 ({}=off keeps everything)",
                names::RETENTION,
                names::RETENTION_DAYS
            ));
        }
        return Ok(Some(d));
    }
    let days = days.map(str::trim).unwrap_or_default();
    if days.is_empty() {
        return Ok(Some(Duration::from_secs(DEFAULT_RETENTION_DAYS * 86_400)));
    }
    if days.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let n: u64 = days.parse().map_err(|_| {
        format!(
            "{}: {days:?} is neither a number of days nor `off`",
            names::RETENTION_DAYS
        )
    })?;
    if n < floor.0 {
        return Err(format!(
            "{}: at least {} here: shorter, a copy of an event the queue still holds could \
             find its message gone and be delivered again (`off` keeps everything)",
            names::RETENTION_DAYS,
            floor.0
        ));
    }
    Ok(Some(Duration::from_secs(n.saturating_mul(86_400))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_parser_reads_every_shared_setting() {
        let given = std::collections::HashMap::from([
            (names::RETRY_SCHEDULE, "0s,1s"),
            (names::ALLOW_HTTP, "TRUE"),
            (names::ALLOWED_NETWORKS, "127.0.0.1/32"),
            (names::REQUEST_TIMEOUT, "2s"),
            (names::DISABLE_AFTER, "off"),
            (names::MAX_ENDPOINTS, "7"),
            (names::CONCURRENCY, "9"),
            (names::RETENTION_DAYS, "20"),
            (names::PORTAL_TITLE, " Acme hooks "),
            (names::PORTAL_ACCENT, "#AA3300"),
            (
                names::PORTAL_FRAME_ANCESTORS,
                "https://app.example.com   'self'",
            ),
            (names::PORTAL_LINK_TTL, "5m"),
            (names::PORTAL_SESSION_TTL, "2h"),
            (names::PORTAL_BASE_URL, "https://hooks.example.com/"),
            (names::FAILING_AFTER, "5"),
            (
                names::CREDENTIALS_KEY,
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
        ]);
        let get = |name: &str| given.get(name).map(|v| v.to_string());
        let s = Settings::parse(&get, RetentionFloor::SQS).expect("valid");
        assert_eq!(s.core.retry.attempts(), 2);
        assert!(s.core.url_policy.allow_http);
        assert_eq!(s.core.url_policy.allowed_networks.len(), 1);
        assert_eq!(s.core.request_timeout, Duration::from_secs(2));
        assert_eq!(s.core.disable_after, None);
        assert_eq!(s.core.max_endpoints, 7);
        assert_eq!(s.core.failing_after, Some(5));
        assert_eq!(
            s.core
                .credentials_key
                .as_ref()
                .map(|k| k.expose())
                .as_deref(),
            Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
        );
        assert_eq!(s.concurrency, 9);
        assert_eq!(s.retention, Some(Duration::from_secs(20 * 86_400)));
        assert_eq!(s.core.portal.title, "Acme hooks");
        assert_eq!(s.core.portal.accent, "#aa3300");
        assert_eq!(
            s.core.portal.frame_ancestors,
            "https://app.example.com 'self'"
        );
        assert_eq!(s.core.portal.link_ttl, Duration::from_secs(300));
        assert_eq!(s.core.portal.session_ttl, Duration::from_secs(7200));
        assert_eq!(
            s.core.portal.base_url.as_deref(),
            Some("https://hooks.example.com")
        );

        let defaults =
            Settings::parse(&|_| Some("  ".into()), RetentionFloor::SQS).expect("blank is unset");
        assert_eq!(defaults.concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(defaults.core.max_endpoints, DEFAULT_MAX_ENDPOINTS);
        assert_eq!(
            defaults.retention,
            Some(Duration::from_secs(DEFAULT_RETENTION_DAYS * 86_400))
        );
        assert!(!defaults.core.url_policy.allow_http);
        assert_eq!(defaults.core.portal, PortalConfig::default());
        assert_eq!(defaults.core.portal.link_ttl, Duration::from_secs(600));
        assert_eq!(
            defaults.core.portal.session_ttl,
            Duration::from_secs(86_400)
        );
        assert_eq!(defaults.core.failing_after, Some(3));
        assert!(defaults.core.credentials_key.is_none());
        let short = Settings::parse(
            &|n| (n == names::CREDENTIALS_KEY).then(|| "c2hvcnQ=".into()),
            RetentionFloor::SQS,
        );
        assert!(short.unwrap_err().starts_with(names::CREDENTIALS_KEY));
        let off = Settings::parse(
            &|n| (n == names::FAILING_AFTER).then(|| "OFF".into()),
            RetentionFloor::SQS,
        )
        .expect("off is a value");
        assert_eq!(off.core.failing_after, None);
    }

    #[test]
    fn a_bad_setting_is_refused_with_its_name() {
        for (name, bad) in [
            (names::RETRY_SCHEDULE, "soon"),
            (names::ALLOW_HTTP, "maybe"),
            (names::ALLOWED_NETWORKS, "10.0.0.0/99"),
            (names::REQUEST_TIMEOUT, "0s"),
            (names::DISABLE_AFTER, "later"),
            (names::MAX_ENDPOINTS, "0"),
            (names::CONCURRENCY, "65537"),
            (names::RETENTION_DAYS, "2d"),
            (names::RETENTION, "0s"),
            (names::PORTAL_ACCENT, "red;}body{display:none"),
            (names::PORTAL_FRAME_ANCESTORS, "*; script-src *"),
            (names::PORTAL_LOGO_URL, "javascript:alert(1)"),
            (names::PORTAL_LINK_TTL, "0s"),
            (names::PORTAL_SESSION_TTL, "soon"),
            (names::PORTAL_TITLE, "a\nb"),
            (names::FAILING_AFTER, "0"),
        ] {
            let get = |n: &str| (n == name).then(|| bad.to_string());
            let e = Settings::parse(&get, RetentionFloor::EMBEDDED).expect_err(name);
            assert!(e.starts_with(name), "{name}: {e}");
        }
    }

    #[test]
    fn the_retention_floor_is_the_queues() {
        let day = Duration::from_secs(86_400);
        let days = |d: &str, floor| parse_retention(Some(d), None, floor);
        assert_eq!(days("1", RetentionFloor::EMBEDDED), Ok(Some(day)));
        assert!(
            days("14", RetentionFloor::SQS).is_err(),
            "SQS keeps a message 14 days"
        );
        assert_eq!(days(" 15 ", RetentionFloor::SQS), Ok(Some(15 * day)));
        assert_eq!(days("OFF", RetentionFloor::SQS), Ok(None));
        for bad in ["0", "-1", "1.5", "2d"] {
            assert!(days(bad, RetentionFloor::EMBEDDED).is_err(), "{bad}");
        }
        let exact = parse_retention(Some("off"), Some("5s"), RetentionFloor::SQS);
        assert_eq!(
            exact,
            Ok(Some(Duration::from_secs(5))),
            "exact, for tests, has no floor"
        );
    }

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
