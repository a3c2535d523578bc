//! Response bodies. Records are turned into views here so that secrets and key hashes
//! have no way into a response.

use hookline_core::catalog::EventTypeDef;
use hookline_core::http::rfc3339;
use hookline_core::ids::{ApiKeyId, AttemptId, EndpointId, MessageId, TenantId};
use hookline_core::model::{
    ApiKeyRecord, Attempt, CustomEventType, Delivery, Domain, Endpoint, Message, Tenant,
};
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct TenantView {
    #[schema(value_type = String, example = "tn_01JQ8C9HT5N6R0D4X5W1V2Z3YK")]
    pub id: TenantId,
    pub name: String,
    /// The tenant this is a sub-account of; `null` for a top-level tenant.
    #[schema(value_type = Option<String>)]
    pub parent: Option<TenantId>,
    pub created_at: String,
}

impl From<&Tenant> for TenantView {
    fn from(t: &Tenant) -> Self {
        TenantView {
            id: t.id,
            name: t.name.clone(),
            parent: t.parent,
            created_at: rfc3339(t.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyView {
    #[schema(value_type = String, example = "key_01JQ8C9HT5N6R0D4X5W1V2Z3YK")]
    pub id: ApiKeyId,
    pub prefix: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

impl From<&ApiKeyRecord> for ApiKeyView {
    fn from(k: &ApiKeyRecord) -> Self {
        ApiKeyView {
            id: k.id,
            prefix: k.prefix.clone(),
            created_at: rfc3339(k.created_at),
            revoked_at: k.revoked_at.map(rfc3339),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DomainView {
    pub name: String,
    pub created_at: String,
}

impl From<&Domain> for DomainView {
    fn from(d: &Domain) -> Self {
        DomainView {
            name: d.name.clone(),
            created_at: rfc3339(d.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct EndpointView {
    #[schema(value_type = String, example = "ep_01JQ8C9HT5N6R0D4X5W1V2Z3YK")]
    pub id: EndpointId,
    pub url: String,
    pub description: String,
    pub event_types: Option<Vec<String>>,
    pub domain: Option<String>,
    /// The payload filter; `null`: every message.
    #[schema(value_type = Option<crate::openapi::FilterNode>)]
    pub filter: Option<serde_json::Value>,
    #[schema(value_type = crate::openapi::FormatName)]
    pub format: &'static str,
    #[schema(value_type = crate::openapi::StatusName)]
    pub status: &'static str,
    pub disabled_reason: Option<String>,
    /// When it was disabled (through the API or automatically); `null` while active.
    pub disabled_at: Option<String>,
    /// Since when every attempt has failed; `null` while it succeeds. An endpoint failing
    /// for the deployment's period (5 days by default) is disabled automatically.
    pub failing_since: Option<String>,
    /// Requests per second at most; `null` for no limit.
    pub rate_limit: Option<u32>,
    pub created_at: String,
    pub updated_at: String,
    /// The signatures its requests carry: `v1,` (HMAC), `v1a,` (ed25519) or both.
    #[schema(value_type = crate::openapi::SigningName)]
    pub signing: &'static str,
    /// Extra headers every request carries (names in lower case); `{}`: none.
    pub headers: std::collections::BTreeMap<String, String>,
    /// How requests authenticate to the receiver, without its secrets; `null`: they do not.
    #[schema(value_type = Option<crate::openapi::AuthView>)]
    pub auth: Option<hookline_core::credentials::AuthSummary>,
    /// `strict`: one message at a time in the order accepted; `none`: side by side.
    #[schema(value_type = crate::openapi::OrderingName)]
    pub ordering: &'static str,
}

impl From<&Endpoint> for EndpointView {
    fn from(e: &Endpoint) -> Self {
        EndpointView {
            id: e.id,
            url: e.url.clone(),
            description: e.description.clone(),
            event_types: e.event_types.clone(),
            domain: e.domain.clone(),
            filter: e.filter.as_ref().map(|f| f.source().clone()),
            format: e.format.as_str(),
            status: e.status.as_str(),
            disabled_reason: e.disabled_reason.clone(),
            disabled_at: e.disabled_at.map(rfc3339),
            failing_since: e.failing_since.map(rfc3339),
            rate_limit: e.rate_limit,
            created_at: rfc3339(e.created_at),
            updated_at: rfc3339(e.updated_at),
            signing: e.secrets.signing().as_str(),
            headers: e.headers.clone(),
            auth: e.auth.as_ref().map(|a| a.summary.clone()),
            ordering: e.ordering.as_str(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MessageView<'a> {
    #[schema(value_type = String, example = "msg_01JQ8C9HT5N6R0D4X5W1V2Z3YK")]
    pub id: MessageId,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub domain: Option<&'a str>,
    #[schema(value_type = Object)]
    pub payload: &'a RawValue,
    pub idempotency_key: Option<&'a str>,
    /// The tenant that published it for its owner; `null` when the owner published it.
    #[schema(value_type = Option<String>)]
    pub published_by: Option<TenantId>,
    pub received_at: String,
}

impl<'a> From<&'a Message> for MessageView<'a> {
    fn from(m: &'a Message) -> Self {
        MessageView {
            id: m.id,
            event_type: &m.event_type,
            domain: m.domain.as_deref(),
            payload: &m.payload,
            idempotency_key: m.idempotency_key.as_deref(),
            published_by: m.publisher,
            received_at: rfc3339(m.received_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    #[schema(value_type = String)]
    pub endpoint_id: EndpointId,
    pub status: &'static str,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub updated_at: String,
}

impl From<&Delivery> for DeliveryView {
    fn from(d: &Delivery) -> Self {
        DeliveryView {
            endpoint_id: d.endpoint,
            status: d.status.as_str(),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at.map(rfc3339),
            last_status_code: d.last_status_code,
            last_error: d.last_error.clone(),
            updated_at: rfc3339(d.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    #[schema(value_type = String)]
    pub id: AttemptId,
    #[schema(value_type = String)]
    pub endpoint_id: EndpointId,
    pub attempt: u32,
    pub at: String,
    pub status_code: Option<u16>,
    pub latency_ms: u32,
    pub response: String,
    pub error: Option<String>,
    pub outcome: &'static str,
}

impl From<&Attempt> for AttemptView {
    fn from(a: &Attempt) -> Self {
        AttemptView {
            id: a.id,
            endpoint_id: a.endpoint,
            attempt: a.number,
            at: rfc3339(a.at),
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            response: a.response.clone(),
            error: a.error.clone(),
            outcome: a.outcome.as_str(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct EventTypeView<'a> {
    pub name: &'a str,
    pub provider: &'a str,
    pub description: &'a str,
    #[schema(value_type = Object)]
    pub sample: &'a RawValue,
}

impl<'a> From<&'a EventTypeDef> for EventTypeView<'a> {
    fn from(d: &'a EventTypeDef) -> Self {
        EventTypeView {
            name: &d.name,
            provider: &d.provider,
            description: &d.description,
            sample: &d.sample,
        }
    }
}

impl<'a> From<&'a CustomEventType> for EventTypeView<'a> {
    fn from(d: &'a CustomEventType) -> Self {
        EventTypeView {
            name: &d.name,
            provider: &d.provider,
            description: &d.description,
            sample: &d.sample,
        }
    }
}

/// How much of a dead letter's body a listing shows, in characters.
const DEAD_LETTER_EXCERPT: usize = 1024;

/// A message on the dead-letter queue.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterView {
    /// Its id on the dead-letter queue, for a selective redrive.
    pub id: String,
    /// Why it was dead-lettered (`max_receives`: the queue moved it after its receives
    /// ran out).
    pub reason: String,
    /// The tenant its body names, when it names one.
    #[schema(value_type = Option<String>)]
    pub tenant_id: Option<TenantId>,
    /// When it was dead-lettered (on SQS: when it was first sent).
    pub at: String,
    /// The start of its body (1024 characters at most).
    pub body_excerpt: String,
    #[serde(skip)]
    pub cursor: String,
}

impl From<&hookline_core::ports::DeadLetter> for DeadLetterView {
    fn from(d: &hookline_core::ports::DeadLetter) -> Self {
        DeadLetterView {
            id: d.id.clone(),
            reason: d.reason.clone(),
            tenant_id: d.tenant(),
            at: rfc3339(d.at),
            body_excerpt: d.body.chars().take(DEAD_LETTER_EXCERPT).collect(),
            cursor: d.cursor(),
        }
    }
}
