//! What travels on the events queue: an event to fan out (from ingest, or written straight
//! to the queue by a producer), or a wake-up for one (message, endpoint) delivery.
//! Payloads are carried as raw JSON so they reach receivers byte for byte.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::envelope::Route;
use crate::ids::{EndpointId, MessageId, TenantId, PAGE_CAPACITY};
use crate::model::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Event,
    Attempt,
    Page,
}

/// A published event waiting to be stored and fanned out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTask {
    kind: Kind,
    pub id: MessageId,
    /// The publisher.
    pub tenant: TenantId,
    /// The tenant whose event it is, when not the publisher (see [`EventTask::route`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<TenantId>,
    #[serde(rename = "type")]
    pub event_type: String,
    pub payload: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub received_at: Millis,
    /// Ingest has bound the idempotency key already; a direct producer's key is bound by
    /// the worker.
    #[serde(default)]
    pub key_claimed: bool,
    /// The publisher's ordering key (see [`crate::envelope::EventEnvelope::ordering_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// Sent on the ordered queue, in its tenant's sequence: its fan-out queues its
    /// unordered deliveries instead of making them, so that the sequence is not held up
    /// by them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sequenced: bool,
}

/// "Make attempt `expect + 1` of this delivery, not before `not_before`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptTask {
    kind: Kind,
    pub message: MessageId,
    pub endpoint: EndpointId,
    pub tenant: TenantId,
    pub expect: u32,
    pub not_before: Millis,
    /// A delivery to a strictly ordered endpoint, on the ordered queue: it makes whichever
    /// attempt is next and stays at the head of its sequence until the delivery settles.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ordered: bool,
}

/// The envelope a producer may write straight to the queue: the HTTP envelope plus its
/// tenant, since there is no API key to tell it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProducerEnvelope {
    tenant: String,
    #[serde(rename = "type")]
    event_type: String,
    payload: Box<RawValue>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    ordering_key: Option<String>,
}

/// Events of one publish stored together, as one page (see [`MessageId::page`]): the
/// events ingest accepted in one request for one owner, without an idempotency key or an
/// ordered sequence, in their order. One queue message and one stored item carry them all.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageTask {
    kind: Kind,
    pub events: Vec<EventTask>,
}

impl PageTask {
    /// A page of events whose ids are one [`MessageId::page`], in order, all of one owner
    /// and checked by ingest; else why not.
    pub fn new(events: Vec<EventTask>) -> Result<Self, String> {
        let page = PageTask {
            kind: Kind::Page,
            events,
        };
        page.check()?;
        Ok(page)
    }

    fn check(&self) -> Result<(), String> {
        let Some(first) = self.events.first() else {
            return Err("a page without events".into());
        };
        if self.events.len() > PAGE_CAPACITY {
            return Err(format!("a page holds at most {PAGE_CAPACITY} events"));
        }
        let (base, owner) = (first.id.page_base(), first.route().tenant);
        for (i, event) in self.events.iter().enumerate() {
            if event.id.page_base() != base || event.id.page_index() != i {
                return Err(format!("event {i} of the page has an id out of its page"));
            }
            if event.route().tenant != owner || !event.key_claimed || event.sequenced {
                return Err(format!("event {i} does not belong in a page"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub enum Task {
    Event(EventTask),
    Attempt(AttemptTask),
    Page(PageTask),
}

/// Where a queue message came from, for producer envelopes that carry no id of their own.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// A message id stable across redeliveries of the same queue message.
    pub message_id: MessageId,
    pub received_at: Millis,
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    kind: Option<Kind>,
}

impl EventTask {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: MessageId,
        tenant: TenantId,
        event_type: String,
        payload: Box<RawValue>,
        domain: Option<String>,
        idempotency_key: Option<String>,
        received_at: Millis,
        key_claimed: bool,
    ) -> Self {
        EventTask {
            kind: Kind::Event,
            id,
            tenant,
            owner: None,
            event_type,
            payload,
            domain,
            idempotency_key,
            received_at,
            key_claimed,
            ordering_key: None,
            sequenced: false,
        }
    }

    /// Sets the publisher's ordering key, and whether the task is sent on the ordered
    /// queue (see [`EventTask::sequenced`]).
    pub fn with_ordering(mut self, key: Option<String>, sequenced: bool) -> Self {
        self.ordering_key = key;
        self.sequenced = sequenced;
        self
    }

    /// The sequence of the ordered queue its task goes in, when sequenced: its owner's
    /// events of one ordering key, in the order accepted.
    pub fn group(&self) -> String {
        sequence(
            &self.route().tenant.to_string(),
            self.ordering_key.as_deref(),
        )
    }

    /// Names the tenant whose event this is, when it is not the publisher.
    pub fn with_owner(mut self, owner: Option<TenantId>) -> Self {
        self.owner = owner.filter(|o| *o != self.tenant);
        self
    }

    /// Whose event this is, as the task says. Trusted as it stands only for tasks ingest
    /// made (`key_claimed`), which validated the owner; a producer's is validated by the
    /// worker.
    pub fn route(&self) -> Route {
        Route {
            tenant: self.owner.unwrap_or(self.tenant),
            publisher: self.tenant,
        }
    }
}

impl AttemptTask {
    pub fn new(
        message: MessageId,
        endpoint: EndpointId,
        tenant: TenantId,
        expect: u32,
        not_before: Millis,
    ) -> Self {
        AttemptTask {
            kind: Kind::Attempt,
            message,
            endpoint,
            tenant,
            expect,
            not_before,
            ordered: false,
        }
    }

    /// The delivery of a message to a strictly ordered endpoint, as queued in the
    /// endpoint's sequence for the message's ordering key.
    pub fn ordered(message: MessageId, endpoint: EndpointId, tenant: TenantId) -> Self {
        AttemptTask {
            ordered: true,
            ..AttemptTask::new(message, endpoint, tenant, 0, 0)
        }
    }
}

/// The name of a sequence of the ordered queue: `{owner}` or `{owner}:{ordering key}`
/// (an ordering key holds no character that could make two names collide).
pub fn sequence(owner: &str, ordering_key: Option<&str>) -> String {
    match ordering_key {
        Some(key) => format!("{owner}:{key}"),
        None => owner.to_owned(),
    }
}

impl Task {
    pub fn to_body(&self) -> String {
        let json = match self {
            Task::Event(t) => serde_json::to_string(t),
            Task::Attempt(t) => serde_json::to_string(t),
            Task::Page(t) => serde_json::to_string(t),
        };
        json.expect("tasks always serialize")
    }

    /// Parses a queue message body. A body without `kind` is a producer's envelope.
    pub fn parse(body: &str, origin: Origin) -> Result<Task, String> {
        let probe: Probe =
            serde_json::from_str(body).map_err(|e| format!("not a JSON object: {e}"))?;
        match probe.kind {
            Some(Kind::Event) => serde_json::from_str(body)
                .map(Task::Event)
                .map_err(|e| format!("malformed event task: {e}")),
            Some(Kind::Attempt) => serde_json::from_str(body)
                .map(Task::Attempt)
                .map_err(|e| format!("malformed attempt task: {e}")),
            Some(Kind::Page) => {
                let page: PageTask =
                    serde_json::from_str(body).map_err(|e| format!("malformed page task: {e}"))?;
                page.check()
                    .map_err(|e| format!("malformed page task: {e}"))?;
                Ok(Task::Page(page))
            }
            None => {
                let env: ProducerEnvelope = serde_json::from_str(body)
                    .map_err(|e| format!("malformed event envelope: {e}"))?;
                let tenant = TenantId::parse(&env.tenant)
                    .ok_or_else(|| format!("unknown tenant {:?}", env.tenant))?;
                // Said as the worker says it of an owner that parses but is not allowed.
                let owner = env
                    .owner
                    .map(|o| TenantId::parse(&o).ok_or("owner not found"))
                    .transpose()?;
                Ok(Task::Event(
                    EventTask::new(
                        origin.message_id,
                        tenant,
                        env.event_type,
                        env.payload,
                        env.domain,
                        env.idempotency_key,
                        origin.received_at,
                        false,
                    )
                    .with_owner(owner)
                    .with_ordering(env.ordering_key, false),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            message_id: MessageId::new(),
            received_at: 42,
        }
    }

    #[test]
    fn tasks_round_trip_with_the_payload_intact() {
        let payload = RawValue::from_string(r#"{"z": 1,"a":2}"#.into()).unwrap();
        let t = EventTask::new(
            MessageId::new(),
            TenantId::new(),
            "delivered".into(),
            payload,
            Some("mg.example.com".into()),
            None,
            7,
            true,
        );
        let Task::Event(back) = Task::parse(&Task::Event(t.clone()).to_body(), origin()).unwrap()
        else {
            panic!("expected an event task");
        };
        assert_eq!(back.id, t.id);
        assert_eq!(back.payload.get(), r#"{"z": 1,"a":2}"#);
        assert!(back.key_claimed);

        let a = AttemptTask::new(MessageId::new(), EndpointId::new(), TenantId::new(), 3, 99);
        let Task::Attempt(back) =
            Task::parse(&Task::Attempt(a.clone()).to_body(), origin()).unwrap()
        else {
            panic!("expected an attempt task");
        };
        assert_eq!(back, a);
    }

    fn event(id: MessageId, tenant: TenantId) -> EventTask {
        let payload = RawValue::from_string(r#"{"n":1}"#.into()).unwrap();
        EventTask::new(id, tenant, "opened".into(), payload, None, None, 7, true)
    }

    #[test]
    fn pages_round_trip_and_only_whole_pages_of_one_owner_parse() {
        let tenant = TenantId::new();
        let ids = MessageId::page(3);
        let page = PageTask::new(ids.iter().map(|id| event(*id, tenant)).collect()).unwrap();
        let Task::Page(back) = Task::parse(&Task::Page(page).to_body(), origin()).unwrap() else {
            panic!("expected a page task");
        };
        assert_eq!(back.events.iter().map(|e| e.id).collect::<Vec<_>>(), ids);

        let reordered = vec![event(ids[1], tenant), event(ids[0], tenant)];
        assert!(PageTask::new(reordered).is_err());
        let strangers = vec![event(ids[0], tenant), event(ids[1], TenantId::new())];
        assert!(PageTask::new(strangers).is_err());
        let mut unchecked = event(ids[0], tenant);
        unchecked.key_claimed = false;
        assert!(PageTask::new(vec![unchecked]).is_err());
        assert!(PageTask::new(Vec::new()).is_err());
        let forged = format!(
            r#"{{"kind":"page","events":[{},{}]}}"#,
            Task::Event(event(ids[2], tenant)).to_body(),
            Task::Event(event(ids[1], tenant)).to_body()
        );
        assert!(Task::parse(&forged, origin()).is_err());
    }

    #[test]
    fn producer_envelopes_take_their_id_from_the_origin() {
        let tenant = TenantId::new();
        let o = origin();
        let body = format!(r#"{{"tenant":"{tenant}","type":"opened","payload":{{"a":1}}}}"#);
        let Task::Event(t) = Task::parse(&body, o).unwrap() else {
            panic!("expected an event task");
        };
        assert_eq!(t.id, o.message_id);
        assert_eq!(t.tenant, tenant);
        assert_eq!(t.received_at, 42);
        assert!(!t.key_claimed);
        assert_eq!(t.route(), Route::own(tenant));
    }

    #[test]
    fn owners_travel_with_the_task() {
        let (publisher, owner) = (TenantId::new(), TenantId::new());
        let body = format!(
            r#"{{"tenant":"{publisher}","owner":"{owner}","type":"opened","payload":{{}}}}"#
        );
        let Task::Event(t) = Task::parse(&body, origin()).unwrap() else {
            panic!("expected an event task");
        };
        let expected = Route {
            tenant: owner,
            publisher,
        };
        assert_eq!(t.route(), expected);
        let Task::Event(back) = Task::parse(&Task::Event(t).to_body(), origin()).unwrap() else {
            panic!("expected an event task");
        };
        assert_eq!(back.route(), expected);

        let body = format!(
            r#"{{"tenant":"{publisher}","owner":"nobody","type":"opened","payload":{{}}}}"#
        );
        assert_eq!(Task::parse(&body, origin()).unwrap_err(), "owner not found");
        // Naming oneself is no owner at all.
        let own = EventTask::new(
            MessageId::new(),
            publisher,
            "opened".into(),
            RawValue::from_string("{}".into()).unwrap(),
            None,
            None,
            1,
            true,
        )
        .with_owner(Some(publisher));
        assert_eq!(own.owner, None);
    }

    #[test]
    fn malformed_bodies_are_refused_with_a_reason() {
        for body in [
            "not json",
            "[]",
            r#"{"type":"opened","payload":{}}"#,
            r#"{"tenant":"nobody","type":"opened","payload":{}}"#,
            r#"{"kind":"attempt","message":"x"}"#,
            r#"{"kind":"teleport"}"#,
        ] {
            assert!(Task::parse(body, origin()).is_err(), "{body}");
        }
    }
}
