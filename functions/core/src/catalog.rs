//! The built-in event-type catalog: the provider webhook events Hookline accepts, each with
//! a description and a sample payload, compiled in from `catalog.json`, plus the syntax
//! rule every event type name must follow. The operator may add types at run time; those
//! live in storage ([`EventTypeStore`]), and [`resolve`] is the one place that knows both.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::ports::EventTypeStore;

/// Longest event type name, in characters.
const MAX_NAME_CHARS: usize = 128;

#[derive(Debug, Clone, Serialize)]
pub struct EventTypeDef {
    pub name: String,
    pub provider: String,
    pub description: String,
    /// Kept as the exact JSON text from the catalog file, so it is served byte for byte.
    pub sample: Box<RawValue>,
}

/// The on-disk shape. Kept apart from `EventTypeDef` so the public type stays
/// serialize-only and the file format can change without touching callers.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogEntry {
    name: String,
    provider: String,
    description: String,
    sample: Box<RawValue>,
}

static BUILTIN: LazyLock<Vec<EventTypeDef>> = LazyLock::new(|| {
    // The file is compiled in and covered by the tests below, so a parse failure is a
    // build defect rather than a runtime condition worth recovering from.
    let entries: Vec<CatalogEntry> = serde_json::from_str(include_str!("../catalog.json"))
        .expect("functions/core/catalog.json is not a valid event-type catalog");
    entries
        .into_iter()
        .map(|e| EventTypeDef {
            name: e.name,
            provider: e.provider,
            description: e.description,
            sample: e.sample,
        })
        .collect()
});

static INDEX: LazyLock<HashMap<&'static str, &'static EventTypeDef>> = LazyLock::new(|| {
    builtin()
        .iter()
        .map(|def| (def.name.as_str(), def))
        .collect()
});

/// The built-in catalog, in file order, parsed on first use.
pub fn builtin() -> &'static [EventTypeDef] {
    &BUILTIN
}

/// Looks a name up in the built-in catalog.
pub fn lookup(name: &str) -> Option<&'static EventTypeDef> {
    INDEX.get(name).copied()
}

/// Whether `name` is an event type: a built-in one, else one the operator added. The
/// built-ins are answered without storage; a name that breaks the syntax rule cannot have
/// been added, so it is not looked up either.
///
/// Generic rather than `&dyn EventTypeStore` so callers can pass their `&dyn Store` as it
/// is (trait upcasting needs a newer compiler than the workspace's minimum).
pub async fn resolve<S: EventTypeStore + ?Sized>(store: &S, name: &str) -> Result<bool> {
    if lookup(name).is_some() {
        return Ok(true);
    }
    if check_name_syntax(name).is_err() {
        return Ok(false);
    }
    Ok(store.get_event_type(name).await?.is_some())
}

/// The sample payload of a built-in or operator-added event type; `None` if unknown.
pub async fn sample<S: EventTypeStore + ?Sized>(
    store: &S,
    name: &str,
) -> Result<Option<Box<RawValue>>> {
    if let Some(def) = lookup(name) {
        return Ok(Some(def.sample.clone()));
    }
    if check_name_syntax(name).is_err() {
        return Ok(None);
    }
    Ok(store.get_event_type(name).await?.map(|t| t.sample))
}

/// The error for an event type that [`resolve`] does not know.
pub fn unknown(name: &str) -> Error {
    Error::invalid(
        "unknown_event_type",
        format!("unknown event type {name:?}; see GET /v1/event-types"),
    )
}

/// The refusal (422) of a name under Hookline's reserved prefix, which only Hookline's own
/// operational events carry (see [`crate::operational`]): nobody adds or publishes one.
pub fn check_not_reserved(name: &str) -> Result<()> {
    if crate::operational::is_reserved(name) {
        return Err(Error::unprocessable(
            "reserved_event_type",
            format!(
                "event types starting with {:?} are Hookline's own operational events",
                crate::operational::PREFIX
            ),
        ));
    }
    Ok(())
}

/// Checks an event type name's syntax: 1 to 128 characters, no control characters, no
/// leading or trailing whitespace. The error is a message fit to show the caller.
pub fn check_name_syntax(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("event type name must not be empty".to_string());
    }
    // Counted in characters, not bytes, so non-ASCII names get the same allowance.
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "event type name is {chars} characters long; the limit is {MAX_NAME_CHARS}"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("event type name must not contain control characters".to_string());
    }
    // Inner spaces are legitimate (SendPulse uses "message sent"); outer ones only
    // produce names that look identical but never match.
    if name.trim() != name {
        return Err(
            "event type name must not be blank or start or end with whitespace".to_string(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const PROVIDERS: [&str; 6] = [
        "mailgun",
        "paubox",
        "postal",
        "sendpulse",
        "mailivery",
        "hookline",
    ];

    const EXPECTED: &[(&str, &[&str])] = &[
        (
            "mailgun",
            &[
                "accepted",
                "delivered",
                "opened",
                "clicked",
                "unsubscribed",
                "complained",
                "permanent_fail",
                "temporary_fail",
            ],
        ),
        (
            "paubox",
            &[
                "api_mail_log_delivered",
                "api_mail_log_temporary_failure",
                "api_mail_log_permanent_failure",
                "api_mail_log_opened",
            ],
        ),
        (
            "postal",
            &[
                "MessageSent",
                "MessageDelayed",
                "MessageDeliveryFailed",
                "MessageHeld",
                "MessageBounced",
                "MessageLinkClicked",
                "SendLimitApproaching",
                "SendLimitExceeded",
                "DomainDNSError",
            ],
        ),
        (
            "sendpulse",
            &[
                "message sent",
                "delivery bounce",
                "message open",
                "message clicked",
                "complaint",
                "unsubscribe",
                "whatsapp template sent",
                "whatsapp template delivered",
                "whatsapp template read",
                "whatsapp inbox message received",
                "whatsapp template bounce",
                "mailing group subscribe",
                "mailing group unsubscribe",
                "contact adding",
            ],
        ),
        (
            "mailivery",
            &[
                "campaign.pending",
                "campaign.created",
                "campaign.updated",
                "campaign.deleted",
                "campaign.connection.problematic",
            ],
        ),
        (
            "hookline",
            &[
                crate::operational::ENDPOINT_DISABLED,
                crate::operational::ENDPOINT_ENABLED,
                crate::operational::ATTEMPT_EXHAUSTED,
                crate::operational::ATTEMPT_FAILING,
            ],
        ),
    ];

    #[test]
    fn every_expected_name_is_present_under_its_provider() {
        for (provider, names) in EXPECTED {
            for name in *names {
                let def = lookup(name).unwrap_or_else(|| panic!("{name:?} missing"));
                assert_eq!(def.provider, *provider, "provider of {name:?}");
            }
        }
    }

    #[test]
    fn catalog_holds_nothing_beyond_the_expected_names() {
        let expected: HashSet<&str> = EXPECTED
            .iter()
            .flat_map(|(_, names)| names.iter().copied())
            .collect();
        for def in builtin() {
            assert!(
                expected.contains(def.name.as_str()),
                "unexpected {:?}",
                def.name
            );
        }
        assert_eq!(builtin().len(), expected.len());
    }

    #[test]
    fn names_are_unique() {
        let mut seen = HashSet::new();
        for def in builtin() {
            assert!(seen.insert(def.name.as_str()), "duplicate {:?}", def.name);
        }
    }

    #[test]
    fn entries_are_well_formed() {
        for def in builtin() {
            assert!(
                check_name_syntax(&def.name).is_ok(),
                "bad name {:?}",
                def.name
            );
            assert!(
                PROVIDERS.contains(&def.provider.as_str()),
                "provider of {:?}",
                def.name
            );
            assert!(
                !def.description.trim().is_empty(),
                "description of {:?}",
                def.name
            );
        }
    }

    #[test]
    fn every_sample_is_a_json_object() {
        for def in builtin() {
            let value: serde_json::Value = serde_json::from_str(def.sample.get()).unwrap();
            assert!(
                value.is_object(),
                "sample of {:?} is not an object",
                def.name
            );
        }
    }

    #[test]
    fn samples_carry_no_doc_placeholders() {
        // The SendPulse and Mailivery docs ship obfuscated addresses; samples must not.
        for def in builtin() {
            assert!(
                !def.sample.get().contains("[email protected]"),
                "placeholder in sample of {:?}",
                def.name
            );
        }
    }

    #[test]
    fn sendpulse_complaint_uses_ascii_name() {
        let def = lookup("complaint").unwrap();
        assert!(def.name.is_ascii());
        let value: serde_json::Value = serde_json::from_str(def.sample.get()).unwrap();
        assert_eq!(value["event"], "complaint");
    }

    #[test]
    fn lookup_of_unknown_name_is_none() {
        assert!(lookup("no.such.event").is_none());
        assert!(lookup("").is_none());
        // Names are case-sensitive: Postal's are CamelCase, the others are not.
        assert!(lookup("messagesent").is_none());
    }

    /// Answers `get_event_type` from a fixed list and counts the calls.
    struct Added(Vec<&'static str>, std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl EventTypeStore for Added {
        async fn create_event_type(&self, _: &crate::model::CustomEventType) -> Result<()> {
            unreachable!("resolve never writes")
        }
        async fn get_event_type(
            &self,
            name: &str,
        ) -> Result<Option<crate::model::CustomEventType>> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(self
                .0
                .contains(&name)
                .then(|| crate::model::CustomEventType {
                    name: name.to_string(),
                    provider: "custom".into(),
                    description: String::new(),
                    sample: RawValue::from_string("{}".into()).unwrap(),
                    created_at: 0,
                }))
        }
        async fn list_event_types(
            &self,
            _: &crate::model::PageQuery,
        ) -> Result<crate::model::Page<crate::model::CustomEventType>> {
            unreachable!("resolve never lists")
        }
    }

    #[tokio::test]
    async fn resolve_knows_built_in_then_added_types() {
        let store = Added(vec!["acme.thing"], Default::default());
        let calls = || store.1.load(std::sync::atomic::Ordering::SeqCst);
        assert!(resolve(&store, "delivered").await.unwrap());
        assert_eq!(calls(), 0, "built-ins need no storage");
        assert!(!resolve(&store, " bad").await.unwrap());
        assert_eq!(calls(), 0, "a name breaking the syntax is not looked up");
        assert!(resolve(&store, "acme.thing").await.unwrap());
        assert!(!resolve(&store, "acme.other").await.unwrap());
        assert_eq!(calls(), 2);
        let dynamic: &dyn EventTypeStore = &store;
        assert!(resolve(dynamic, "acme.thing").await.unwrap());
    }

    #[test]
    fn name_syntax() {
        assert!(check_name_syntax("").is_err());
        assert!(check_name_syntax(" x").is_err());
        assert!(check_name_syntax("x ").is_err());
        assert!(check_name_syntax("   ").is_err());
        assert!(check_name_syntax(&"a".repeat(129)).is_err());
        assert!(check_name_syntax("a\nb").is_err());
        assert!(check_name_syntax(&"a".repeat(128)).is_ok());
        assert!(check_name_syntax("campaign.connection.problematic").is_ok());
        assert!(check_name_syntax("message sent").is_ok());
    }
}
