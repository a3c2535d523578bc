//! Operational webhooks: the events Hookline publishes about itself (an endpoint disabled
//! or enabled, a delivery failing or out of retries), under the reserved `hookline.`
//! prefix, and who receives them: the owning tenant's endpoints that name them, and the
//! operator's endpoints, kept under a reserved tenant of their own.
//!
//! They travel as ordinary event tasks on the events queue, so they are stored, signed,
//! retried, logged and replayable like any message. Two copies of each are queued: one
//! for the tenant the event is about, one for the operator tenant.
//!
//! No loops: a delivery of an operational message never produces a `failing` or an
//! `exhausted` event, whatever it answers; and `hookline.endpoint.disabled` is published
//! once per change of an endpoint from active to disabled, which a disabled endpoint
//! cannot repeat and does not receive. So an endpoint whose operational deliveries fail
//! is told about (to the others) at most once, when it is disabled.

use chrono::SecondsFormat;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::ids::{EndpointId, MessageId, TenantId};
use crate::model::{Endpoint, Millis};
use crate::ports::{Outgoing, Queue};
use crate::task::{EventTask, Task};

/// The prefix of Hookline's own event types, reserved: nobody may add or publish one.
pub const PREFIX: &str = "hookline.";

pub const ENDPOINT_DISABLED: &str = "hookline.endpoint.disabled";
pub const ENDPOINT_ENABLED: &str = "hookline.endpoint.enabled";
pub const ATTEMPT_EXHAUSTED: &str = "hookline.message.attempt.exhausted";
pub const ATTEMPT_FAILING: &str = "hookline.message.attempt.failing";

/// Consecutive failed attempts of one delivery after which `failing` is published, by
/// default.
pub const DEFAULT_FAILING_AFTER: u32 = 3;

/// The tenant that holds the operator's endpoints (and the operator's copy of every
/// operational message). No tenant record exists under it and no key belongs to it, so
/// only the operator routes reach it.
pub const OPERATOR_TENANT: TenantId = TenantId::nil();

/// Whether `name` is under the reserved prefix.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// Whether a message of `event_type` (and `domain`) goes to `endpoint`. Operational types
/// go only to endpoints that name them, so that a tenant's catch-all endpoint keeps its
/// shape of events; the operator's endpoints take every operational type unless filtered.
pub fn receives(endpoint: &Endpoint, event_type: &str, domain: Option<&str>) -> bool {
    if !endpoint.subscribes_to(event_type, domain) {
        return false;
    }
    if endpoint.tenant == OPERATOR_TENANT {
        return is_reserved(event_type);
    }
    !is_reserved(event_type) || endpoint.event_types.is_some()
}

/// One event Hookline publishes about itself.
#[derive(Debug, Clone)]
pub enum Operational {
    EndpointDisabled {
        endpoint: EndpointId,
        reason: String,
        failing_since: Option<Millis>,
        at: Millis,
    },
    EndpointEnabled {
        endpoint: EndpointId,
        at: Millis,
    },
    /// A delivery failed for good: out of retries, or answered 406/410.
    AttemptExhausted {
        message: MessageId,
        endpoint: EndpointId,
        event_type: String,
        attempts: u32,
        last_status: Option<u16>,
        last_error: Option<String>,
        at: Millis,
    },
    /// A delivery failed this many attempts in a row and will be tried again.
    AttemptFailing {
        message: MessageId,
        endpoint: EndpointId,
        event_type: String,
        attempts: u32,
        last_status: Option<u16>,
        last_error: Option<String>,
        at: Millis,
    },
}

fn rfc3339(ms: Millis) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

impl Operational {
    pub fn event_type(&self) -> &'static str {
        match self {
            Operational::EndpointDisabled { .. } => ENDPOINT_DISABLED,
            Operational::EndpointEnabled { .. } => ENDPOINT_ENABLED,
            Operational::AttemptExhausted { .. } => ATTEMPT_EXHAUSTED,
            Operational::AttemptFailing { .. } => ATTEMPT_FAILING,
        }
    }

    fn at(&self) -> Millis {
        match self {
            Operational::EndpointDisabled { at, .. }
            | Operational::EndpointEnabled { at, .. }
            | Operational::AttemptExhausted { at, .. }
            | Operational::AttemptFailing { at, .. } => *at,
        }
    }

    /// The payload about `tenant`'s resource: `{"type", "timestamp", "data"}`, the type
    /// repeated so that a `raw` receiver can tell the events apart.
    pub fn payload(&self, tenant: TenantId) -> Value {
        let data = match self {
            Operational::EndpointDisabled {
                endpoint,
                reason,
                failing_since,
                at,
            } => json!({
                "tenant_id": tenant,
                "endpoint_id": endpoint,
                "reason": reason,
                "failing_since": failing_since.map_or(Value::Null, rfc3339),
                "disabled_at": rfc3339(*at),
            }),
            Operational::EndpointEnabled { endpoint, .. } => json!({
                "tenant_id": tenant,
                "endpoint_id": endpoint,
            }),
            Operational::AttemptExhausted {
                message,
                endpoint,
                event_type,
                attempts,
                last_status,
                last_error,
                ..
            }
            | Operational::AttemptFailing {
                message,
                endpoint,
                event_type,
                attempts,
                last_status,
                last_error,
                ..
            } => json!({
                "tenant_id": tenant,
                "message_id": message,
                "endpoint_id": endpoint,
                "event_type": event_type,
                "attempts": attempts,
                "last_status": last_status,
                "last_error": last_error,
            }),
        };
        json!({
            "type": self.event_type(),
            "timestamp": rfc3339(self.at()),
            "data": data,
        })
    }

    /// The event tasks that publish this event about `tenant`'s resource: one for the
    /// tenant, one for the operator (only the latter for the operator's own endpoints).
    pub fn tasks(&self, tenant: TenantId) -> Vec<EventTask> {
        let payload = RawValue::from_string(self.payload(tenant).to_string())
            .expect("a serialized value is valid JSON");
        let task = |to: TenantId| {
            EventTask::new(
                MessageId::new(),
                to,
                self.event_type().to_string(),
                payload.clone(),
                None,
                None,
                self.at(),
                // Made here, not by a producer: nothing to validate or bind.
                true,
            )
        };
        if tenant == OPERATOR_TENANT {
            vec![task(OPERATOR_TENANT)]
        } else {
            vec![task(tenant), task(OPERATOR_TENANT)]
        }
    }
}

/// Queues an operational event about `tenant`'s resource, as any event is queued. What
/// caused it is done and stored already (and is not done again), so a queue that refuses
/// the event costs the event alone, with an error logged.
pub async fn publish<Q: Queue + ?Sized>(queue: &Q, tenant: TenantId, event: Operational) {
    let kind = event.event_type();
    let outgoing = event
        .tasks(tenant)
        .into_iter()
        .map(|t| Outgoing {
            body: Task::Event(t).to_body(),
            delay: std::time::Duration::ZERO,
        })
        .collect();
    match queue.send(outgoing).await {
        Ok(()) => tracing::info!(%tenant, event_type = kind, "operational event published"),
        Err(e) => {
            tracing::error!(%tenant, event_type = kind, error = %e, "operational event not queued")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::endpoint_to;

    #[test]
    fn operational_types_go_only_to_endpoints_that_name_them() {
        let tenant = TenantId::new();
        let catch_all = endpoint_to(tenant, "https://a.example.com/", None);
        assert!(receives(&catch_all, "delivered", None));
        assert!(!receives(&catch_all, ENDPOINT_DISABLED, None));

        let mut named = catch_all.clone();
        named.event_types = Some(vec![ENDPOINT_DISABLED.into()]);
        assert!(receives(&named, ENDPOINT_DISABLED, None));
        assert!(!receives(&named, ATTEMPT_EXHAUSTED, None));

        let operator = endpoint_to(OPERATOR_TENANT, "https://ops.example.com/", None);
        assert!(receives(&operator, ATTEMPT_EXHAUSTED, None));
        assert!(
            !receives(&operator, "delivered", None),
            "the operator's endpoints take operational events only"
        );
    }

    #[test]
    fn each_event_is_queued_for_its_tenant_and_the_operator() {
        let tenant = TenantId::new();
        let event = Operational::EndpointDisabled {
            endpoint: EndpointId::new(),
            reason: "the endpoint answered 410 Gone".into(),
            failing_since: Some(1_000),
            at: 2_000,
        };
        let tasks = event.tasks(tenant);
        let owners: Vec<_> = tasks.iter().map(|t| t.tenant).collect();
        assert_eq!(owners, vec![tenant, OPERATOR_TENANT]);
        assert_ne!(tasks[0].id, tasks[1].id);
        assert!(tasks.iter().all(|t| t.key_claimed));
        let body: Value = serde_json::from_str(tasks[0].payload.get()).unwrap();
        assert_eq!(body["type"], ENDPOINT_DISABLED);
        assert_eq!(body["data"]["tenant_id"], tenant.to_string());
        assert_eq!(body["data"]["failing_since"], "1970-01-01T00:00:01.000Z");
        assert_eq!(event.tasks(OPERATOR_TENANT).len(), 1);
        assert!(is_reserved(ATTEMPT_FAILING) && !is_reserved("hookline"));
    }
}
