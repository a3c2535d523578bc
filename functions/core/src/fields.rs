//! The rules of an endpoint's fields, as types parsed once at the edge: the URL (against
//! the deployment's URL policy), the event-type filter (against the catalog), the
//! payload filter, the description, the body format, the rate limit, the status, the secret, the domain
//! scope, the extra headers and the receiver credentials. `/v1`, the Mailgun-compatible `/v3` and anything later take their input through
//! these, so a rule lives in one place and every route refuses the same input the same way.

use serde_json::Value;

use crate::catalog;
use crate::credentials::{reserved, CredentialsKey, CustomHeaders, ReceiverAuth, SealedAuth};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::ids::{EndpointId, TenantId};
use crate::model::{BodyFormat, EndpointStatus, Ordering};
use crate::ports::{EndpointStore, EventTypeStore};
use crate::signing::{Secret, Signing};
use crate::urlpolicy::UrlPolicy;

/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 1024;
/// Most event types one endpoint subscribes to.
pub const MAX_EVENT_TYPES: usize = 256;
/// Highest rate limit, in requests per second.
pub const MAX_RATE_LIMIT: u64 = 10_000;

/// A delivery URL the deployment's policy allows, in its normalised form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(String);

impl EndpointUrl {
    pub fn parse(policy: &UrlPolicy, raw: &str) -> Result<Self> {
        policy
            .check_url(raw.trim())
            .map(|u| EndpointUrl(u.to_string()))
            .map_err(|e| Error::invalid("invalid_url", e))
    }

    pub fn into_string(self) -> String {
        self.0
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which event types an endpoint receives: `None` for all, else each a type of the
/// catalog (built in or added by the operator), without repeats, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter(Option<Vec<String>>);

impl EventFilter {
    pub async fn parse<S: EventTypeStore + ?Sized>(
        store: &S,
        types: Option<Vec<String>>,
    ) -> Result<Self> {
        let Some(types) = types else {
            return Ok(EventFilter(None));
        };
        if types.is_empty() {
            return Err(Error::invalid(
                "invalid_event_types",
                "event_types must not be empty; omit it or set null to receive every event",
            ));
        }
        if types.len() > MAX_EVENT_TYPES {
            return Err(Error::invalid(
                "invalid_event_types",
                format!("at most {MAX_EVENT_TYPES} event types"),
            ));
        }
        let mut out: Vec<String> = Vec::with_capacity(types.len());
        for t in types {
            if !catalog::resolve(store, &t).await? {
                return Err(catalog::unknown(&t));
            }
            if !out.contains(&t) {
                out.push(t);
            }
        }
        Ok(EventFilter(Some(out)))
    }

    pub fn into_inner(self) -> Option<Vec<String>> {
        self.0
    }
}

/// Free text describing an endpoint, at most [`MAX_DESCRIPTION`] characters.
pub fn description(d: Option<String>) -> Result<String> {
    let d = d.unwrap_or_default();
    if d.chars().count() > MAX_DESCRIPTION {
        return Err(Error::invalid(
            "invalid_description",
            format!("description is limited to {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok(d)
}

/// A body format by name; `raw` when absent.
pub fn format(f: Option<&str>) -> Result<BodyFormat> {
    match f {
        None => Ok(BodyFormat::default()),
        Some(s) => BodyFormat::parse(s)
            .ok_or_else(|| Error::invalid("invalid_format", format!("unknown format {s:?}"))),
    }
}

/// An endpoint's ordering by name; `none` when absent. `strict` needs a queue with an
/// ordered side (`keeps_order`); without one it is a 422 `ordering_unavailable`.
pub fn ordering(o: Option<&str>, keeps_order: bool) -> Result<Ordering> {
    let ordering = match o {
        None => Ordering::default(),
        Some(s) => Ordering::parse(s).ok_or_else(|| {
            Error::unprocessable(
                "invalid_ordering",
                format!("ordering must be \"none\" or \"strict\", not {s:?}"),
            )
        })?,
    };
    if ordering == Ordering::Strict && !keeps_order {
        return Err(Error::unprocessable(
            "ordering_unavailable",
            "this deployment has no ordered queue: strict ordering is not available",
        ));
    }
    Ok(ordering)
}

/// A rate limit: absent or `null` for none, else a whole number of requests per second
/// from 1 to [`MAX_RATE_LIMIT`]; anything else is unprocessable (422).
pub fn rate_limit(value: Option<&Value>) -> Result<Option<u32>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_RATE_LIMIT).contains(n))
            .map(|n| Some(n as u32))
            .ok_or_else(|| {
                Error::unprocessable(
                    "invalid_rate_limit",
                    format!(
                        "rate_limit must be a whole number of requests per second from 1 to \
                         {MAX_RATE_LIMIT}, or null for no limit"
                    ),
                )
            }),
    }
}

/// A payload filter (see [`crate::filter`]): absent or `null` for none; a fault is a 422
/// `invalid_filter` naming the node by JSON pointer.
pub fn filter(value: Option<&Value>) -> Result<Option<Filter>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Filter::parse(v.clone()).map(Some),
    }
}

/// An endpoint's extra headers (see [`crate::credentials::headers`]); `auth_set`: the
/// endpoint has credentials, which own `authorization`.
pub fn headers(value: Option<&Value>, auth_set: bool) -> Result<CustomHeaders> {
    crate::credentials::headers(value, auth_set)
}

/// Whether an endpoint's headers and credentials agree once both are settled (a PATCH may
/// set either alone): `authorization` is not an extra header of an endpoint with `auth`.
pub fn headers_agree(headers: &CustomHeaders, auth_set: bool) -> Result<()> {
    match headers.keys().find(|name| reserved(name, auth_set)) {
        Some(name) => Err(Error::unprocessable(
            "invalid_headers",
            format!("headers.{name}: reserved, Hookline sets it from the endpoint's auth"),
        )),
        None => Ok(()),
    }
}

/// An endpoint's receiver credentials, sealed for endpoint `id` with the deployment's
/// key: absent or `null` for none; a fault is a 422 `invalid_auth` naming the field. A
/// deployment without a credentials key refuses them (422 `auth_unavailable`).
pub fn auth(
    value: Option<&Value>,
    policy: &UrlPolicy,
    key: Option<&CredentialsKey>,
    id: EndpointId,
) -> Result<Option<SealedAuth>> {
    let value = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let auth = ReceiverAuth::parse(value, policy)?;
    let key = key.ok_or_else(|| {
        Error::unprocessable(
            "auth_unavailable",
            "auth: this deployment has no credentials key (HOOKLINE_CREDENTIALS_KEY) to keep credentials with",
        )
    })?;
    key.seal(&auth, id).map(Some)
}

/// An endpoint status by name.
pub fn status(s: &str) -> Result<EndpointStatus> {
    EndpointStatus::parse(s).ok_or_else(|| {
        Error::invalid(
            "invalid_status",
            "status must be \"active\" or \"disabled\"",
        )
    })
}

/// A signing secret of the caller's choosing.
/// An endpoint's signing choice: `hmac` when absent.
pub fn signing(s: Option<&str>) -> Result<Signing> {
    match s {
        None => Ok(Signing::default()),
        Some(s) => Signing::parse(s).ok_or_else(|| {
            Error::invalid(
                "invalid_signing",
                format!("unknown signing {s:?}: hmac, ed25519 or both"),
            )
        }),
    }
}

pub fn secret(s: &str) -> Result<Secret> {
    Secret::parse(s).ok_or_else(|| {
        Error::invalid(
            "invalid_secret",
            "secret must be whsec_ followed by 16 to 64 base64-encoded bytes",
        )
    })
}

/// A domain name as stored and looked up: trimmed, without a trailing dot, lower case.
pub fn domain_name(raw: &str) -> String {
    raw.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// An endpoint's scope: `None` for organisation-wide, else one of the tenant's registered
/// domains (by its stored name).
pub async fn scope<S: EndpointStore + ?Sized>(
    store: &S,
    tenant: TenantId,
    domain: Option<String>,
) -> Result<Option<String>> {
    let Some(domain) = domain else {
        return Ok(None);
    };
    let name = domain_name(&domain);
    if store.get_domain(tenant, &name).await?.is_none() {
        return Err(Error::invalid(
            "unknown_domain",
            format!("domain {name:?} is not registered; create it with POST /v1/domains"),
        ));
    }
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rate_limits_are_whole_numbers_in_range_or_null() {
        assert_eq!(rate_limit(None).unwrap(), None);
        assert_eq!(rate_limit(Some(&Value::Null)).unwrap(), None);
        assert_eq!(rate_limit(Some(&json!(1))).unwrap(), Some(1));
        assert_eq!(rate_limit(Some(&json!(10_000))).unwrap(), Some(10_000));
        for bad in [
            json!(0),
            json!(10_001),
            json!(1.5),
            json!(-1),
            json!("5"),
            json!([]),
        ] {
            match rate_limit(Some(&bad)) {
                Err(Error::Unprocessable { code, .. }) => assert_eq!(code, "invalid_rate_limit"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn filters_are_optional_and_checked() {
        assert_eq!(filter(None).unwrap(), None);
        assert_eq!(filter(Some(&Value::Null)).unwrap(), None);
        let f = json!({"path": "a", "equals": 1});
        assert_eq!(filter(Some(&f)).unwrap().unwrap().source(), &f);
        match filter(Some(&json!({"path": "a"}))) {
            Err(Error::Unprocessable { code, .. }) => assert_eq!(code, "invalid_filter"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn credentials_need_a_key_and_are_sealed_for_their_endpoint() {
        let policy = UrlPolicy::default();
        let id = EndpointId::new();
        let bearer = json!({"type": "bearer", "token": "t0ken"});
        assert_eq!(auth(None, &policy, None, id).unwrap(), None);
        assert_eq!(auth(Some(&Value::Null), &policy, None, id).unwrap(), None);
        match auth(Some(&bearer), &policy, None, id) {
            Err(Error::Unprocessable { code, .. }) => assert_eq!(code, "auth_unavailable"),
            other => panic!("{other:?}"),
        }
        let key = CredentialsKey::generate();
        let sealed = auth(Some(&bearer), &policy, Some(&key), id)
            .unwrap()
            .unwrap();
        assert_eq!(
            key.open(&sealed, id).unwrap(),
            ReceiverAuth::Bearer {
                token: "t0ken".into()
            }
        );
        let headers = headers(Some(&json!({"Authorization": "x"})), false).unwrap();
        assert!(headers_agree(&headers, false).is_ok());
        assert!(headers_agree(&headers, true).is_err());
    }

    #[test]
    fn descriptions_count_characters_not_bytes() {
        assert_eq!(description(None).unwrap(), "");
        assert!(description(Some("é".repeat(MAX_DESCRIPTION))).is_ok());
        assert!(description(Some("é".repeat(MAX_DESCRIPTION + 1))).is_err());
    }

    #[test]
    fn urls_follow_the_policy() {
        let strict = UrlPolicy::default();
        assert_eq!(
            EndpointUrl::parse(&strict, " https://hooks.example.com/in ")
                .unwrap()
                .as_str(),
            "https://hooks.example.com/in"
        );
        for bad in [
            "http://hooks.example.com/",
            "https://10.0.0.1/",
            "ftp://x/",
            "nope",
        ] {
            match EndpointUrl::parse(&strict, bad) {
                Err(Error::Invalid { code, .. }) => assert_eq!(code, "invalid_url", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn formats_statuses_secrets_and_domain_names() {
        assert_eq!(format(None).unwrap(), BodyFormat::Raw);
        assert_eq!(format(Some("mailgun")).unwrap(), BodyFormat::Mailgun);
        assert!(format(Some("xml")).is_err());
        assert_eq!(status("disabled").unwrap(), EndpointStatus::Disabled);
        assert!(status("paused").is_err());
        assert!(secret("whsec_short").is_err());
        assert_eq!(domain_name(" MG.Example.COM. "), "mg.example.com");
    }

    #[cfg(feature = "embedded")]
    #[tokio::test]
    async fn event_filters_resolve_against_the_catalog() {
        let (store, _queue) = crate::embedded::open_in_memory().unwrap();
        let store = store.as_ref();
        assert_eq!(
            EventFilter::parse(store, None).await.unwrap().into_inner(),
            None
        );
        let types = vec!["delivered".to_string(), "opened".into(), "delivered".into()];
        assert_eq!(
            EventFilter::parse(store, Some(types))
                .await
                .unwrap()
                .into_inner(),
            Some(vec!["delivered".to_string(), "opened".into()]),
            "repeats are dropped, order kept"
        );
        assert!(EventFilter::parse(store, Some(Vec::new())).await.is_err());
        assert!(EventFilter::parse(store, Some(vec!["nope.nothing".into()]))
            .await
            .is_err());
    }
}
