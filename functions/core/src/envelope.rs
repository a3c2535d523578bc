//! The event envelope producers publish, over HTTP or straight onto the queue, and the
//! checks every envelope passes before Hookline accepts it. Passing them yields a
//! [`Validated`] event that knows whose event it is ([`Route`]), so what queues or stores
//! it cannot skip the checks or route it differently from how they decided.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::catalog;
use crate::config::{CoreConfig, MAX_BATCH};
use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::ports::{Store, TenantStore};

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;
/// Longest ordering key accepted: with an endpoint id it names an SQS FIFO message group,
/// which takes 128 characters.
pub const MAX_ORDERING_KEY: usize = 64;

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
    /// The tenant whose event this is when it is not the publisher's: the publisher itself
    /// or one of its direct sub-accounts. Kept as text: an id that does not parse is "not
    /// found" like one that does not exist, so the answer never tells them apart.
    #[serde(default)]
    pub owner: Option<String>,
    /// Splits the sequence of a strictly ordered endpoint: messages of different keys are
    /// delivered independently, each key's in the order accepted. Ignored by unordered
    /// endpoints.
    #[serde(default)]
    pub ordering_key: Option<String>,
}

/// Whose event an accepted envelope is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The tenant the event belongs to: its log, endpoints and domains (the owner if one
    /// was named, else the publisher).
    pub tenant: TenantId,
    /// The tenant that published it; idempotency keys are scoped by it.
    pub publisher: TenantId,
}

impl Route {
    /// An event of the publisher's own.
    pub fn own(publisher: TenantId) -> Self {
        Route {
            tenant: publisher,
            publisher,
        }
    }

    /// The owner, when it is not the publisher.
    pub fn owner(&self) -> Option<TenantId> {
        (self.tenant != self.publisher).then_some(self.tenant)
    }

    /// The publisher, when it is not the owner (what a message records).
    pub fn publisher_if_other(&self) -> Option<TenantId> {
        (self.tenant != self.publisher).then_some(self.publisher)
    }
}

/// An envelope that passed [`EventEnvelope::validate`], with its route. Only `validate`
/// makes one.
#[derive(Debug)]
pub struct Validated {
    event: EventEnvelope,
    route: Route,
}

impl Validated {
    pub fn event(&self) -> &EventEnvelope {
        &self.event
    }

    pub fn route(&self) -> Route {
        self.route
    }

    pub fn into_parts(self) -> (EventEnvelope, Route) {
        (self.event, self.route)
    }
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
        // Parsed whole, not only its keys: a payload that a JSON value cannot hold (a number
        // past f64's range) is refused here, as every later reader of it parses it so.
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

/// Parses a request body that may be left out: an empty body is `T::default()`, anything
/// else must be valid JSON of `T` (else a 400, as [`json_error`] says).
pub fn json_or_default<T: Default + serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T> {
    if raw.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(raw).map_err(json_error)
}

impl EventEnvelope {
    /// Checks what can be checked without storage: the syntax of every field. Whether the
    /// type exists needs storage (the operator may have added it), so `validate` asks.
    pub fn check(&self, config: &CoreConfig) -> Result<()> {
        if catalog::check_name_syntax(&self.event_type).is_err() {
            return Err(catalog::unknown(&self.event_type));
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
        if let Some(key) = &self.ordering_key {
            check_ordering_key(key)?;
        }
        Ok(())
    }

    /// Full check of an envelope `publisher` sent: the above, plus the type must be known
    /// (built in or added), the owner must be the publisher or one of its direct
    /// sub-accounts, and the domain must be one of the owner's.
    pub async fn validate<S: Store + ?Sized>(
        self,
        publisher: TenantId,
        config: &CoreConfig,
        store: &S,
    ) -> Result<Validated> {
        self.check(config)?;
        catalog::check_not_reserved(&self.event_type)?;
        if !catalog::resolve(store, &self.event_type).await? {
            return Err(catalog::unknown(&self.event_type));
        }
        let route = route(store, publisher, self.owner.as_deref()).await?;
        if let Some(domain) = &self.domain {
            if store.get_domain(route.tenant, domain).await?.is_none() {
                return Err(Error::invalid(
                    "unknown_domain",
                    format!("domain {domain:?} is not registered; create it with POST /v1/domains"),
                ));
            }
        }
        Ok(Validated { event: self, route })
    }
}

/// Whose event an envelope of `publisher` naming `owner` is. Any owner but the publisher
/// and its direct sub-accounts (another tenant, the publisher's own parent, an unknown or
/// malformed id) is "owner not found", so ids cannot be probed.
async fn route<S: TenantStore + ?Sized>(
    store: &S,
    publisher: TenantId,
    owner: Option<&str>,
) -> Result<Route> {
    let Some(owner) = owner else {
        return Ok(Route::own(publisher));
    };
    let id = TenantId::parse(owner).ok_or(Error::NotFound("owner"))?;
    if id == publisher {
        return Ok(Route::own(publisher));
    }
    match store.get_tenant(id).await? {
        Some(tenant) if tenant.parent == Some(publisher) => Ok(Route {
            tenant: id,
            publisher,
        }),
        _ => Err(Error::NotFound("owner")),
    }
}

/// An ordering key is 1 to [`MAX_ORDERING_KEY`] characters among letters, digits and
/// `-_.:`, the characters of an SQS message group id it becomes part of.
pub fn check_ordering_key(key: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if key.is_empty() || key.len() > MAX_ORDERING_KEY || !key.chars().all(allowed) {
        return Err(Error::invalid(
            "invalid_ordering_key",
            format!(
                "ordering_key must be 1 to {MAX_ORDERING_KEY} letters, digits or the \
                 characters - _ . :"
            ),
        ));
    }
    Ok(())
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
    fn ordering_keys_are_checked_for_length_and_characters() {
        let with = |key: &str| {
            let body = serde_json::json!({"type": "delivered", "payload": {}, "ordering_key": key});
            let Publish::One(e) = Publish::parse(body.to_string().as_bytes()).unwrap() else {
                panic!("expected one event");
            };
            e.check(&cfg()).map_err(|e| e.code().to_owned())
        };
        assert!(with("order-42_eu.west:1").is_ok());
        assert!(with(&"k".repeat(MAX_ORDERING_KEY)).is_ok());
        for bad in [
            "",
            "with space",
            "ünïcode",
            "slash/es",
            &"k".repeat(MAX_ORDERING_KEY + 1),
        ] {
            assert_eq!(with(bad).unwrap_err(), "invalid_ordering_key", "{bad:?}");
        }
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
            Publish::parse(br#"{"type":"a","payload":{"x":[1,}}"#)
                .unwrap_err()
                .code(),
            "invalid_json",
            "a payload that is not JSON is refused as the body is"
        );
        assert_eq!(
            Publish::parse(br#"{"type":"a","payload":{}} x"#)
                .unwrap_err()
                .code(),
            "invalid_json",
            "nothing may follow the object"
        );
        assert_eq!(
            Publish::parse(br#"{"type":"a","payload":{"n":1e400}}"#)
                .unwrap_err()
                .code(),
            "invalid_json",
            "a number no JSON value holds is refused"
        );
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
        // Whether a well-formed type exists is for `validate` (see the contract tests).
        let e = parse(r#"{"type":"no.such.type","payload":{}}"#);
        e.check(&cfg()).unwrap();
        let e = parse(r#"{"type":" delivered","payload":{}}"#);
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
    fn owners_are_kept_as_text() {
        let body = br#"{"type":"delivered","payload":{},"owner":"not-an-id"}"#;
        let e = Publish::parse(body).unwrap().into_events().remove(0);
        assert_eq!(e.owner.as_deref(), Some("not-an-id"));
        e.check(&cfg()).unwrap();
    }

    #[test]
    fn routes_name_the_other_party_only_when_there_is_one() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let own = Route::own(a);
        assert_eq!((own.owner(), own.publisher_if_other()), (None, None));
        let owned = Route {
            tenant: b,
            publisher: a,
        };
        assert_eq!(
            (owned.owner(), owned.publisher_if_other()),
            (Some(b), Some(a))
        );
    }

    /// The owner rule, custom types and the owner's domains, on a real store.
    #[cfg(feature = "embedded")]
    #[tokio::test]
    async fn validate_routes_to_the_publisher_or_its_sub_accounts_only() {
        use crate::ids::ApiKeyId;
        use crate::keys::PlainKey;
        use crate::model::{ApiKeyRecord, CustomEventType, Domain, Tenant};
        use crate::ports::{EndpointStore, EventTypeStore};

        let (store, _queue) = crate::embedded::open_in_memory().unwrap();
        let add = |parent: Option<TenantId>| {
            let store = store.clone();
            async move {
                let id = TenantId::new();
                let tenant = Tenant {
                    id,
                    name: "t".into(),
                    parent,
                    created_at: 0,
                };
                let key = ApiKeyRecord {
                    id: ApiKeyId::new(),
                    tenant: id,
                    hash: PlainKey::generate_tenant().hash(),
                    prefix: "hk_x".into(),
                    created_at: 0,
                    revoked_at: None,
                };
                store.create_tenant(&tenant, &key).await.unwrap();
                id
            }
        };
        let parent = add(None).await;
        let sub = add(Some(parent)).await;
        let unrelated = add(None).await;
        let unrelated_sub = add(Some(unrelated)).await;
        store
            .create_domain(&Domain {
                tenant: sub,
                name: "sub.example.com".into(),
                created_at: 0,
            })
            .await
            .unwrap();
        let validate = |publisher: TenantId, body: String| {
            let store = store.clone();
            async move {
                let e = Publish::parse(body.as_bytes())
                    .unwrap()
                    .into_events()
                    .remove(0);
                e.validate(publisher, &cfg(), store.as_ref())
                    .await
                    .map(|v| v.route())
            }
        };
        let owned =
            |owner: &str| format!(r#"{{"type":"delivered","payload":{{}},"owner":"{owner}"}}"#);

        assert_eq!(
            validate(parent, owned(&sub.to_string())).await.unwrap(),
            Route {
                tenant: sub,
                publisher: parent
            }
        );
        assert_eq!(
            validate(parent, owned(&parent.to_string())).await.unwrap(),
            Route::own(parent)
        );
        for (publisher, owner) in [
            (parent, unrelated.to_string()),
            (parent, unrelated_sub.to_string()),
            (sub, parent.to_string()),
            (parent, TenantId::new().to_string()),
            (parent, "tn_nope".to_string()),
        ] {
            let e = validate(publisher, owned(&owner)).await.unwrap_err();
            assert_eq!(e.to_string(), "owner not found", "{owner}");
        }

        // The domain must be the owner's, not the publisher's.
        let with_domain = |owner: TenantId| {
            format!(
                r#"{{"type":"delivered","payload":{{}},"owner":"{owner}","domain":"sub.example.com"}}"#
            )
        };
        assert!(validate(parent, with_domain(sub)).await.is_ok());
        let e = validate(parent, with_domain(parent)).await.unwrap_err();
        assert_eq!(e.code(), "unknown_domain");

        // A type is known once the operator adds it.
        let body = r#"{"type":"acme.thing","payload":{}}"#.to_string();
        let e = validate(parent, body.clone()).await.unwrap_err();
        assert_eq!(e.code(), "unknown_event_type");
        store
            .create_event_type(&CustomEventType {
                name: "acme.thing".into(),
                provider: "custom".into(),
                description: "d".into(),
                sample: RawValue::from_string("{}".into()).unwrap(),
                created_at: 0,
            })
            .await
            .unwrap();
        assert_eq!(validate(parent, body).await.unwrap(), Route::own(parent));
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
