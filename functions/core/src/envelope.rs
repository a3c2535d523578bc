//! The event envelope producers publish, over HTTP or straight onto the queue, and the
//! checks every envelope passes before Hookline accepts it.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::catalog;
use crate::config::{CoreConfig, MAX_BATCH};
use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::ports::EndpointStore;

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventEnvelope {
    #[serde(rename = "type")]
    pub event_type: String,
    pub payload: Box<RawValue>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    events: Vec<EventEnvelope>,
}

/// A publish request: one envelope, or `{"events": [...]}`.
#[derive(Debug)]
pub enum Publish {
    One(EventEnvelope),
    Many(Vec<EventEnvelope>),
}

impl Publish {
    /// Parses a request body. Payloads stay as the producer wrote them.
    pub fn parse(body: &[u8]) -> Result<Publish> {
        let top: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(body) {
            Ok(map) => map,
            Err(e) => return Err(json_error(e)),
        };
        if top.contains_key("events") {
            let batch: Batch = serde_json::from_slice(body).map_err(json_error)?;
            if batch.events.is_empty() {
                return Err(Error::invalid(
                    "invalid_request",
                    "events must not be empty",
                ));
            }
            if batch.events.len() > MAX_BATCH {
                return Err(Error::invalid(
                    "batch_too_large",
                    format!("at most {MAX_BATCH} events per request"),
                ));
            }
            Ok(Publish::Many(batch.events))
        } else {
            Ok(Publish::One(
                serde_json::from_slice(body).map_err(json_error)?,
            ))
        }
    }

    pub fn into_events(self) -> Vec<EventEnvelope> {
        match self {
            Publish::One(e) => vec![e],
            Publish::Many(v) => v,
        }
    }
}

/// Maps a serde error to a 400: syntax errors and shape errors get different codes.
pub fn json_error(e: serde_json::Error) -> Error {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => Error::invalid(
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        ),
        Category::Data => Error::invalid("invalid_request", e.to_string()),
    }
}

impl EventEnvelope {
    /// Checks what can be checked without storage.
    pub fn check(&self, config: &CoreConfig) -> Result<()> {
        if catalog::lookup(&self.event_type).is_none() {
            return Err(Error::invalid(
                "unknown_event_type",
                format!(
                    "unknown event type {:?}; see GET /v1/event-types",
                    self.event_type
                ),
            ));
        }
        check_payload(&self.payload, config.max_payload)?;
        if let Some(domain) = &self.domain {
            check_domain_name(domain)?;
        }
        if let Some(key) = &self.idempotency_key {
            if key.is_empty()
                || key.len() > MAX_IDEMPOTENCY_KEY
                || key.chars().any(|c| c.is_control())
            {
                return Err(Error::invalid(
                    "invalid_idempotency_key",
                    format!(
                        "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Full check: the above, plus the domain must be one of the tenant's.
    pub async fn validate(
        &self,
        tenant: TenantId,
        config: &CoreConfig,
        store: &dyn EndpointStore,
    ) -> Result<()> {
        self.check(config)?;
        if let Some(domain) = &self.domain {
            if store.get_domain(tenant, domain).await?.is_none() {
                return Err(Error::invalid(
                    "unknown_domain",
                    format!("domain {domain:?} is not registered; create it with POST /v1/domains"),
                ));
            }
        }
        Ok(())
    }
}

/// A payload must be a JSON object no larger than the limit.
pub fn check_payload(payload: &RawValue, max: usize) -> Result<()> {
    if payload.get().len() > max {
        return Err(Error::TooLarge(format!(
            "payload is {} bytes; the limit is {max}",
            payload.get().len()
        )));
    }
    if !payload.get().trim_start().starts_with('{') {
        return Err(Error::invalid(
            "invalid_payload",
            "payload must be a JSON object",
        ));
    }
    Ok(())
}

/// A domain name: dot-separated labels of letters, digits and hyphens.
pub fn check_domain_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid_domain",
            format!("{name:?} is not a valid domain name"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CoreConfig {
        CoreConfig::default()
    }

    #[test]
    fn parses_one_event_and_keeps_the_payload_verbatim() {
        let body = br#"{"type":"delivered","payload":{"b":1, "a":[2]},"domain":"mg.example.com"}"#;
        let Publish::One(e) = Publish::parse(body).unwrap() else {
            panic!("expected one event");
        };
        assert_eq!(e.event_type, "delivered");
        assert_eq!(e.payload.get(), r#"{"b":1, "a":[2]}"#);
        assert_eq!(e.domain.as_deref(), Some("mg.example.com"));
        e.check(&cfg()).unwrap();
    }

    #[test]
    fn parses_batches_and_limits_their_size() {
        let one = r#"{"type":"opened","payload":{}}"#;
        let body = format!(r#"{{"events":[{one},{one}]}}"#);
        assert_eq!(
            Publish::parse(body.as_bytes()).unwrap().into_events().len(),
            2
        );
        let many = vec![one; MAX_BATCH + 1].join(",");
        let body = format!(r#"{{"events":[{many}]}}"#);
        assert_eq!(
            Publish::parse(body.as_bytes()).unwrap_err().code(),
            "batch_too_large"
        );
        assert_eq!(
            Publish::parse(br#"{"events":[]}"#).unwrap_err().code(),
            "invalid_request"
        );
    }

    #[test]
    fn rejects_bad_bodies_with_distinct_codes() {
        assert_eq!(Publish::parse(b"{nope").unwrap_err().code(), "invalid_json");
        assert_eq!(
            Publish::parse(b"[1]").unwrap_err().code(),
            "invalid_request"
        );
        assert_eq!(
            Publish::parse(br#"{"payload":{}}"#).unwrap_err().code(),
            "invalid_request"
        );
        assert_eq!(
            Publish::parse(br#"{"type":"delivered","payload":{},"colour":"red"}"#)
                .unwrap_err()
                .code(),
            "invalid_request"
        );
    }

    #[test]
    fn checks_type_payload_domain_and_key() {
        let parse = |s: &str| {
            Publish::parse(s.as_bytes())
                .unwrap()
                .into_events()
                .remove(0)
        };
        let e = parse(r#"{"type":"no.such.type","payload":{}}"#);
        assert_eq!(e.check(&cfg()).unwrap_err().code(), "unknown_event_type");
        let e = parse(r#"{"type":"delivered","payload":[1]}"#);
        assert_eq!(e.check(&cfg()).unwrap_err().code(), "invalid_payload");
        let e = parse(r#"{"type":"delivered","payload":{},"domain":"bad domain"}"#);
        assert_eq!(e.check(&cfg()).unwrap_err().code(), "invalid_domain");
        let e = parse(r#"{"type":"delivered","payload":{},"idempotency_key":""}"#);
        assert_eq!(
            e.check(&cfg()).unwrap_err().code(),
            "invalid_idempotency_key"
        );
        let big = format!(
            r#"{{"type":"delivered","payload":{{"x":"{}"}}}}"#,
            "a".repeat(300_000)
        );
        let e = parse(&big);
        assert_eq!(e.check(&cfg()).unwrap_err().code(), "payload_too_large");
    }

    #[test]
    fn domain_names() {
        assert!(check_domain_name("mg.example.com").is_ok());
        assert!(check_domain_name("example").is_ok());
        for bad in ["", "a..b", "-a.com", "a b.com", "a.com/x", &"a".repeat(64)] {
            assert!(check_domain_name(bad).is_err(), "{bad}");
        }
    }
}
