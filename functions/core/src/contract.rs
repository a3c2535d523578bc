//! The contract of the storage and queue ports, as checks that panic on a violation. Every
//! adapter runs it: the embedded ones in their unit tests, the DynamoDB and SQS ones
//! against real tables and queues. The checks use fresh ids, so store runs can share tables.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use ulid::Ulid;

use crate::error::Error;
use crate::ids::{ApiKeyId, AttemptId, EndpointId, MessageId, TenantId};
use crate::keys::{KeyHash, PlainKey};
use crate::model::{
    ApiKeyRecord, Attempt, AttemptOutcome, BodyFormat, CustomEventType, Delivery, DeliveryStatus,
    Domain, Endpoint, EndpointStatus, FailedQuery, HealthChange, Message, MessageQuery, Millis,
    Tenant,
};
use crate::ports::{FirstAttempts, Outgoing, PullQueue, Received, Store, TenantStore};
use crate::signing::{EndpointSecrets, Secret};

/// Runs every store check.
pub async fn store_contract(store: Arc<dyn Store>) {
    let s = store.as_ref();
    tenants_and_keys(s).await;
    sub_accounts(s).await;
    revocation_is_scoped_to_the_tenant(s).await;
    operator_key_is_set_once(s).await;
    domains(s).await;
    deleting_a_domain_deletes_its_scoped_endpoints_only(s).await;
    endpoints(s).await;
    endpoints_are_isolated_by_tenant(s).await;
    insert_message_keeps_the_first_version(s).await;
    a_leased_insert_leases_the_first_attempts_once(s).await;
    messages_are_listed_apart_from_the_tenants_other_records(s).await;
    messages_keep_their_publisher(s).await;
    list_messages_pages_newest_first(s).await;
    list_messages_filters_by_type(s).await;
    idempotency_keys(s).await;
    claims_honour_leases(s).await;
    claims_check_expected_attempts(s).await;
    record_attempt_is_conditional(s).await;
    record_attempt_settles_unclaimed_deliveries(s).await;
    a_first_attempt_can_be_recorded_without_a_claim(s).await;
    the_attempt_log_keeps_every_attempt(s).await;
    endpoint_health_changes_touch_only_health(s).await;
    failed_deliveries_are_listed_by_endpoint_and_time(s).await;
    reopen_delivery_is_conditional(s).await;
    event_types(s).await;
}

/// What a queue promises beyond what every queue must, so a check of such a promise runs
/// only against queues that make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueTraits {
    /// An ack with the receipt of an earlier receive leaves a message that was received
    /// again. The embedded queue promises it; SQS does not (such a delete "succeeds, but
    /// the message might not be deleted"), and moto deletes the message.
    pub stale_receipts_rejected: bool,
}

impl QueueTraits {
    /// The embedded queue: every promise.
    pub const EMBEDDED: QueueTraits = QueueTraits {
        stale_receipts_rejected: true,
    };
    /// SQS, and moto standing in for it.
    pub const SQS: QueueTraits = QueueTraits {
        stale_receipts_rejected: false,
    };
}

/// Runs every queue check. The queue must be empty and used by nothing else meanwhile;
/// the checks leave it empty (one message goes to its dead letters).
pub async fn queue_contract(queue: Arc<dyn PullQueue>, traits: QueueTraits) {
    let q = queue.as_ref();
    assert!(
        q.max_delay() >= Duration::from_secs(1),
        "max_delay must allow real delays"
    );
    q.send(Vec::new()).await.expect("sending nothing succeeds");
    send_receive_ack(q).await;
    visibility_timeout_redelivers(q).await;
    stale_receipt_does_not_ack(q, traits).await;
    delay_hides_until_due(q).await;
    release_makes_visible_again(q).await;
    dead_letter_removes_from_the_queue(q).await;
    batch_of_ten_is_all_received(q).await;
}

// ---- fixtures -------------------------------------------------------------------------

/// For other crates' tests: stores a tenant with its first API key and returns the key in
/// clear, as `POST /v1/tenants` would.
pub async fn stored_tenant<S: TenantStore + ?Sized>(
    store: &S,
    parent: Option<TenantId>,
) -> (TenantId, PlainKey) {
    let plain = PlainKey::generate_tenant();
    let mut t = tenant(now());
    t.parent = parent;
    let key = ApiKeyRecord {
        id: ApiKeyId::new(),
        tenant: t.id,
        hash: plain.hash(),
        prefix: plain.shown_prefix(),
        created_at: t.created_at,
        revoked_at: None,
    };
    store.create_tenant(&t, &key).await.expect("create tenant");
    (t.id, plain)
}

/// For other crates' tests: an active, organisation-wide raw-format endpoint record.
pub fn endpoint_to(tenant: TenantId, url: &str, event_types: Option<&[&str]>) -> Endpoint {
    let mut e = endpoint(tenant, None, now());
    e.url = url.to_string();
    e.event_types = event_types.map(|types| types.iter().map(|t| t.to_string()).collect());
    e
}

fn now() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

fn tenant(created_at: Millis) -> Tenant {
    Tenant {
        id: TenantId::new(),
        name: "Contract Corp".into(),
        parent: None,
        created_at,
    }
}

fn api_key(tenant: TenantId, created_at: Millis) -> ApiKeyRecord {
    let plain = PlainKey::generate_tenant();
    ApiKeyRecord {
        id: ApiKeyId::new(),
        tenant,
        hash: plain.hash(),
        prefix: plain.shown_prefix(),
        created_at,
        revoked_at: None,
    }
}

fn domain(tenant: TenantId, name: &str, created_at: Millis) -> Domain {
    Domain {
        tenant,
        name: name.into(),
        created_at,
    }
}

fn endpoint(tenant: TenantId, domain: Option<&str>, created_at: Millis) -> Endpoint {
    Endpoint {
        id: EndpointId::new(),
        tenant,
        url: "https://hooks.example.com/in".into(),
        description: "contract".into(),
        event_types: None,
        domain: domain.map(str::to_owned),
        format: BodyFormat::Raw,
        secrets: EndpointSecrets::new(Secret::generate()),
        status: EndpointStatus::Active,
        disabled_reason: None,
        disabled_at: None,
        failing_since: None,
        rate_limit: None,
        created_at,
        updated_at: created_at,
    }
}

fn message(id: MessageId, tenant: TenantId, event_type: &str, payload: &str) -> Message {
    Message {
        id,
        tenant,
        publisher: None,
        domain: None,
        event_type: event_type.into(),
        payload: RawValue::from_string(payload.to_owned()).expect("valid JSON payload"),
        idempotency_key: None,
        received_at: id.ulid().timestamp_ms() as Millis,
        targets: Vec::new(),
    }
}

/// A message id minted at `ms`, so a test controls the order of ids.
fn message_id_at(ms: Millis) -> MessageId {
    MessageId::from_ulid(Ulid::from_parts(ms as u64, rand::random()))
}

fn attempt(d: &Delivery, number: u32, at: Millis, code: u16, outcome: AttemptOutcome) -> Attempt {
    Attempt {
        id: AttemptId::new(),
        message: d.message,
        endpoint: d.endpoint,
        tenant: d.tenant,
        number,
        at,
        status_code: Some(code),
        latency_ms: 42,
        response: format!("status {code}"),
        error: None,
        outcome,
    }
}

#[track_caller]
fn assert_same_message(got: &Message, want: &Message, what: &str) {
    let view = |m: &Message| {
        (
            m.id,
            m.tenant,
            m.publisher,
            m.domain.clone(),
            m.event_type.clone(),
            // Verbatim: signatures are computed over these exact bytes.
            m.payload.get().to_owned(),
            m.idempotency_key.clone(),
            m.received_at,
            m.targets.clone(),
        )
    };
    assert_eq!(view(got), view(want), "{what}");
}

// ---- tenants and keys -----------------------------------------------------------------

async fn tenants_and_keys(s: &dyn Store) {
    let t0 = now();
    let t = tenant(t0);
    let first = api_key(t.id, t0);
    let second = api_key(t.id, t0 + 1);
    s.create_tenant(&t, &first).await.expect("create tenant");

    let got = s.get_tenant(t.id).await.expect("get tenant");
    assert_eq!(got.as_ref(), Some(&t), "a created tenant is found by id");
    assert_eq!(
        s.get_tenant(TenantId::new()).await.expect("get tenant"),
        None,
        "an unknown tenant is not found"
    );
    assert_eq!(
        s.find_api_key(&first.hash).await.expect("find key"),
        Some(first.clone()),
        "the first key of a tenant is found by its hash"
    );

    s.insert_api_key(&second).await.expect("insert key");
    assert_eq!(
        s.find_api_key(&second.hash).await.expect("find key"),
        Some(second.clone()),
        "an added key is found by its hash"
    );
    assert_eq!(
        s.find_api_key(&PlainKey::generate_tenant().hash())
            .await
            .expect("find key"),
        None,
        "an unknown hash finds no key"
    );
    assert_eq!(
        s.list_api_keys(t.id).await.expect("list keys"),
        vec![first.clone(), second.clone()],
        "keys are listed oldest first"
    );

    let at = t0 + 10;
    assert!(
        s.revoke_api_key(t.id, first.id, at).await.expect("revoke"),
        "revoking a key of the tenant succeeds"
    );
    let revoked = ApiKeyRecord {
        revoked_at: Some(at),
        ..first.clone()
    };
    assert_eq!(
        s.find_api_key(&first.hash).await.expect("find key"),
        Some(revoked.clone()),
        "a revoked key is still found, with revoked_at set"
    );
    assert!(
        s.revoke_api_key(t.id, first.id, at + 10)
            .await
            .expect("revoke"),
        "revoking a revoked key of the tenant still reports the key"
    );
    assert_eq!(
        s.find_api_key(&first.hash).await.expect("find key"),
        Some(revoked.clone()),
        "revoking again keeps the first revocation time"
    );
    assert!(
        !s.revoke_api_key(t.id, ApiKeyId::new(), at)
            .await
            .expect("revoke"),
        "revoking an unknown key reports false"
    );
    assert_eq!(
        s.list_api_keys(t.id).await.expect("list keys"),
        vec![revoked, second],
        "revoked keys stay listed"
    );
}

async fn sub_accounts(s: &dyn Store) {
    let t0 = now();
    let parent = tenant(t0);
    s.create_tenant(&parent, &api_key(parent.id, t0))
        .await
        .expect("create tenant");
    // Created out of id order, so listing by id cannot pass for listing by age.
    let younger = Tenant {
        parent: Some(parent.id),
        ..tenant(t0 + 2)
    };
    let older = Tenant {
        parent: Some(parent.id),
        ..tenant(t0 + 1)
    };
    for child in [&younger, &older] {
        s.create_tenant(child, &api_key(child.id, t0))
            .await
            .expect("create sub-account");
    }
    let unrelated = tenant(t0);
    s.create_tenant(&unrelated, &api_key(unrelated.id, t0))
        .await
        .expect("create tenant");

    assert_eq!(
        s.get_tenant(older.id).await.expect("get tenant"),
        Some(older.clone()),
        "a sub-account is found with its parent"
    );
    assert_eq!(
        s.get_tenant(parent.id).await.expect("get tenant"),
        Some(parent.clone()),
        "a top-level tenant has no parent"
    );
    assert_eq!(
        s.list_sub_accounts(parent.id).await.expect("list"),
        vec![older.clone(), younger],
        "a parent lists its sub-accounts, oldest first"
    );
    for (who, id) in [
        ("a sub-account", older.id),
        ("an unrelated tenant", unrelated.id),
        ("an unknown tenant", TenantId::new()),
    ] {
        assert!(
            s.list_sub_accounts(id).await.expect("list").is_empty(),
            "{who} lists no sub-accounts"
        );
    }
}

async fn revocation_is_scoped_to_the_tenant(s: &dyn Store) {
    let t0 = now();
    let owner = tenant(t0);
    let owner_key = api_key(owner.id, t0);
    let other = tenant(t0);
    let other_key = api_key(other.id, t0);
    s.create_tenant(&owner, &owner_key)
        .await
        .expect("create tenant");
    s.create_tenant(&other, &other_key)
        .await
        .expect("create tenant");

    assert!(
        !s.revoke_api_key(other.id, owner_key.id, t0 + 1)
            .await
            .expect("revoke"),
        "a tenant cannot revoke another tenant's key"
    );
    assert_eq!(
        s.find_api_key(&owner_key.hash).await.expect("find key"),
        Some(owner_key.clone()),
        "a refused revocation leaves the key live"
    );
    assert_eq!(
        s.list_api_keys(other.id).await.expect("list keys"),
        vec![other_key],
        "a tenant lists only its own keys"
    );
}

async fn operator_key_is_set_once(s: &dyn Store) {
    // The operator key is a singleton another run may already have set, so the check
    // holds whether or not this call is the first.
    let candidate = KeyHash::of(PlainKey::generate_operator().expose());
    let stored_now = s
        .init_operator_key_hash(&candidate)
        .await
        .expect("init operator key");
    let stored = s
        .operator_key_hash()
        .await
        .expect("get operator key")
        .expect("an operator key is stored after init");
    if stored_now {
        assert_eq!(stored, candidate, "init stores the given hash");
    }
    let later = KeyHash::of(PlainKey::generate_operator().expose());
    assert!(
        !s.init_operator_key_hash(&later)
            .await
            .expect("init operator key"),
        "init does not replace a stored operator key"
    );
    assert_eq!(
        s.operator_key_hash().await.expect("get operator key"),
        Some(stored),
        "the operator key is unchanged by a second init"
    );
}

// ---- domains and endpoints ------------------------------------------------------------

async fn domains(s: &dyn Store) {
    let t0 = now();
    let t = TenantId::new();
    let other = TenantId::new();
    let shop = domain(t, "shop.example.com", t0);
    let blog = domain(t, "blog.example.com", t0 + 1);
    s.create_domain(&shop).await.expect("create domain");
    s.create_domain(&blog).await.expect("create domain");

    match s.create_domain(&domain(t, &shop.name, t0 + 2)).await {
        Err(Error::Conflict { code, .. }) => assert_eq!(code, "domain_exists"),
        other => panic!("a duplicate domain must be a domain_exists conflict, got {other:?}"),
    }
    assert_eq!(
        s.get_domain(t, &shop.name).await.expect("get domain"),
        Some(shop.clone()),
        "a duplicate create leaves the first domain as it was"
    );
    s.create_domain(&domain(other, &shop.name, t0))
        .await
        .expect("another tenant may create a domain of the same name");

    assert_eq!(
        s.get_domain(t, "missing.example.com")
            .await
            .expect("get domain"),
        None,
        "an unknown domain is not found"
    );
    assert_eq!(
        s.get_domain(TenantId::new(), &blog.name)
            .await
            .expect("get domain"),
        None,
        "a domain is not found under another tenant"
    );
    let mut listed = s.list_domains(t).await.expect("list domains");
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed, vec![blog, shop], "a tenant lists its own domains");
}

async fn deleting_a_domain_deletes_its_scoped_endpoints_only(s: &dyn Store) {
    let t0 = now();
    let t = TenantId::new();
    let other = TenantId::new();
    let (shop, blog) = ("shop.example.com", "blog.example.com");
    for d in [
        domain(t, shop, t0),
        domain(t, blog, t0),
        domain(other, shop, t0),
    ] {
        s.create_domain(&d).await.expect("create domain");
    }
    let in_shop = endpoint(t, Some(shop), t0);
    let in_blog = endpoint(t, Some(blog), t0 + 1);
    let org_wide = endpoint(t, None, t0 + 2);
    let other_shop = endpoint(other, Some(shop), t0);
    for e in [&in_shop, &in_blog, &org_wide, &other_shop] {
        s.put_endpoint(e).await.expect("put endpoint");
    }

    assert!(
        !s.delete_domain(TenantId::new(), shop)
            .await
            .expect("delete domain"),
        "deleting a domain the tenant does not have reports false"
    );
    assert!(
        s.delete_domain(t, shop).await.expect("delete domain"),
        "deleting an existing domain reports true"
    );
    assert_eq!(
        s.get_domain(t, shop).await.expect("get domain"),
        None,
        "the domain is gone"
    );
    assert_eq!(
        s.get_endpoint(t, in_shop.id).await.expect("get endpoint"),
        None,
        "endpoints scoped to the deleted domain are deleted with it"
    );
    assert_eq!(
        s.list_endpoints(t).await.expect("list endpoints"),
        vec![in_blog, org_wide],
        "endpoints of other domains and organisation-wide ones stay"
    );
    assert!(
        s.get_domain(other, shop)
            .await
            .expect("get domain")
            .is_some(),
        "another tenant's domain of the same name stays"
    );
    assert_eq!(
        s.get_endpoint(other, other_shop.id)
            .await
            .expect("get endpoint"),
        Some(other_shop),
        "another tenant's endpoints in a domain of the same name stay"
    );
    assert!(
        !s.delete_domain(t, shop).await.expect("delete domain"),
        "deleting a deleted domain reports false"
    );
    assert_eq!(
        s.list_domains(t).await.expect("list domains"),
        vec![domain(t, blog, t0)],
        "the other domain stays"
    );
}

async fn endpoints(s: &dyn Store) {
    let t0 = now();
    let t = TenantId::new();
    let mut first = endpoint(t, None, t0);
    first.event_types = Some(vec!["order.created".into(), "order.paid".into()]);
    // A rotated secret, so the retired one must round-trip too.
    first.secrets.rotate(Secret::generate(), t0, 86_400_000);
    first.rate_limit = Some(7);
    first.failing_since = Some(t0 - 10);
    let second = endpoint(t, Some("shop.example.com"), t0 + 1);
    s.put_endpoint(&first).await.expect("put endpoint");
    s.put_endpoint(&second).await.expect("put endpoint");

    assert_eq!(
        s.get_endpoint(t, first.id).await.expect("get endpoint"),
        Some(first.clone()),
        "an endpoint round-trips with every field"
    );
    assert_eq!(
        s.list_endpoints(t).await.expect("list endpoints"),
        vec![first.clone(), second.clone()],
        "endpoints are listed oldest first"
    );

    let updated = Endpoint {
        url: "https://hooks.example.com/v2".into(),
        event_types: None,
        status: EndpointStatus::Disabled,
        disabled_reason: Some("failing for 5 days".into()),
        disabled_at: Some(t0 + 100),
        failing_since: None,
        rate_limit: None,
        updated_at: t0 + 100,
        ..first.clone()
    };
    s.put_endpoint(&updated).await.expect("put endpoint");
    assert_eq!(
        s.get_endpoint(t, first.id).await.expect("get endpoint"),
        Some(updated.clone()),
        "put replaces an endpoint"
    );
    assert_eq!(
        s.list_endpoints(t).await.expect("list endpoints"),
        vec![updated, second.clone()],
        "a replaced endpoint is listed once, in its place"
    );

    assert!(
        s.delete_endpoint(t, first.id)
            .await
            .expect("delete endpoint"),
        "deleting an endpoint reports true"
    );
    assert_eq!(
        s.get_endpoint(t, first.id).await.expect("get endpoint"),
        None,
        "a deleted endpoint is gone"
    );
    assert!(
        !s.delete_endpoint(t, first.id)
            .await
            .expect("delete endpoint"),
        "deleting a deleted endpoint reports false"
    );
    assert_eq!(
        s.list_endpoints(t).await.expect("list endpoints"),
        vec![second],
        "the other endpoint stays"
    );
}

async fn endpoints_are_isolated_by_tenant(s: &dyn Store) {
    let t = TenantId::new();
    let other = TenantId::new();
    let e = endpoint(t, None, now());
    s.put_endpoint(&e).await.expect("put endpoint");

    assert_eq!(
        s.get_endpoint(other, e.id).await.expect("get endpoint"),
        None,
        "an endpoint is not found under another tenant"
    );
    assert!(
        !s.delete_endpoint(other, e.id)
            .await
            .expect("delete endpoint"),
        "another tenant cannot delete an endpoint"
    );
    assert!(
        s.list_endpoints(other)
            .await
            .expect("list endpoints")
            .is_empty(),
        "another tenant lists none of the endpoints"
    );
    assert_eq!(
        s.get_endpoint(t, e.id).await.expect("get endpoint"),
        Some(e),
        "a refused delete leaves the endpoint"
    );
}

// ---- messages and idempotency keys ----------------------------------------------------

async fn insert_message_keeps_the_first_version(s: &dyn Store) {
    let t = TenantId::new();
    let mut first = message(
        MessageId::new(),
        t,
        "order.created",
        r#"{ "n": 1,  "s": "é" }"#,
    );
    first.domain = Some("shop.example.com".into());
    first.idempotency_key = Some("order-1".into());
    first.targets = vec![EndpointId::new(), EndpointId::new()];

    let stored = s.insert_message(&first).await.expect("insert message");
    assert_same_message(&stored, &first, "insert returns the stored message");

    let second = Message {
        event_type: "order.deleted".into(),
        payload: RawValue::from_string("{}".into()).expect("valid JSON"),
        targets: Vec::new(),
        ..first.clone()
    };
    let again = s.insert_message(&second).await.expect("insert message");
    assert_same_message(&again, &first, "a second insert returns the first version");

    let got = s
        .get_message(t, first.id)
        .await
        .expect("get message")
        .expect("the message is found");
    assert_same_message(&got, &first, "the first version is kept");
    assert!(
        s.get_message(TenantId::new(), first.id)
            .await
            .expect("get message")
            .is_none(),
        "a message is not found under another tenant"
    );
    assert!(
        s.get_message(t, MessageId::new())
            .await
            .expect("get message")
            .is_none(),
        "an unknown message is not found"
    );
}

async fn a_leased_insert_leases_the_first_attempts_once(s: &dyn Store) {
    let t0 = now();
    let t = TenantId::new();
    let mut first = message(MessageId::new(), t, "order.created", r#"{"n":1}"#);
    first.targets = vec![EndpointId::new(), EndpointId::new()];
    let second = Message {
        targets: Vec::new(),
        ..first.clone()
    };

    let stored = s
        .insert_message_leased(&first, t0, t0 + LEASE_MS)
        .await
        .expect("insert message");
    assert_same_message(
        &stored.message,
        &first,
        "a leased insert returns the message",
    );
    let again = s
        .insert_message_leased(&second, t0 + 1, t0 + 1 + LEASE_MS)
        .await
        .expect("insert message");
    assert_same_message(
        &again.message,
        &first,
        "a second insert returns the first version",
    );
    let later = t0 + LEASE_MS;
    let after = s
        .insert_message_leased(&second, later, later + LEASE_MS)
        .await
        .expect("insert message");
    assert_same_message(&after.message, &first, "the first version is kept");
    match stored.first_attempts {
        FirstAttempts::Leased => {
            assert_eq!(
                again.first_attempts,
                FirstAttempts::HeldUntil(t0 + LEASE_MS),
                "only the call that stored the message gets the lease"
            );
            assert_eq!(
                after.first_attempts,
                FirstAttempts::Open,
                "an ended lease holds nothing"
            );
        }
        FirstAttempts::Open => {
            // A store that does not lease: every first attempt is claimed.
            assert_eq!(again.first_attempts, FirstAttempts::Open);
            assert_eq!(after.first_attempts, FirstAttempts::Open);
        }
        FirstAttempts::HeldUntil(_) => panic!("the call that stored the message is held off"),
    }

    let plain = message(MessageId::new(), t, "order.created", "{}");
    s.insert_message(&plain).await.expect("insert message");
    let leased = s
        .insert_message_leased(&plain, t0, t0 + LEASE_MS)
        .await
        .expect("insert message");
    assert_eq!(
        leased.first_attempts,
        FirstAttempts::Open,
        "a message stored without a lease leaves its first attempts to claims"
    );
}

/// A tenant's messages share storage with its endpoints, keys, domains and idempotency
/// keys in some stores; listings and lookups must keep to the messages.
async fn messages_are_listed_apart_from_the_tenants_other_records(s: &dyn Store) {
    let (t, _) = stored_tenant(s, None).await;
    let at = now();
    s.create_domain(&domain(t, "shop.example.com", at))
        .await
        .expect("create domain");
    s.put_endpoint(&endpoint(t, None, at))
        .await
        .expect("put endpoint");
    s.insert_api_key(&api_key(t, at)).await.expect("insert key");
    s.claim_idempotency_key(t, "zz-key", MessageId::new(), at, Duration::from_secs(60))
        .await
        .expect("claim key");
    let newest_first = insert_messages(s, t, &["a", "b", "c"]).await;
    let want: Vec<MessageId> = newest_first.iter().map(|m| m.id).collect();
    let (all, _) = all_pages(s, t, 2, None).await;
    assert_eq!(all, want, "only messages are listed");
    let page = s
        .list_messages(
            t,
            &MessageQuery {
                before: Some(want[2]),
                limit: 10,
                event_type: None,
            },
        )
        .await
        .expect("list messages");
    assert!(
        page.items.is_empty(),
        "nothing is listed before the oldest message"
    );
    assert!(page.next_cursor.is_none());
}

async fn messages_keep_their_publisher(s: &dyn Store) {
    let owner = TenantId::new();
    let publisher = TenantId::new();
    let mut published = message(MessageId::new(), owner, "order.created", "{}");
    published.publisher = Some(publisher);
    let own = message(MessageId::new(), owner, "order.created", "{}");
    for m in [&published, &own] {
        let stored = s.insert_message(m).await.expect("insert message");
        assert_same_message(&stored, m, "insert returns the publisher");
    }
    let got = s
        .get_message(owner, published.id)
        .await
        .expect("get message")
        .expect("the message is found under its owner");
    assert_same_message(&got, &published, "the publisher is kept");
    assert!(
        s.get_message(publisher, published.id)
            .await
            .expect("get message")
            .is_none(),
        "a message is not found under its publisher"
    );
    let listed = s
        .list_messages(
            owner,
            &MessageQuery {
                limit: 10,
                ..MessageQuery::default()
            },
        )
        .await
        .expect("list messages")
        .items;
    let publishers: Vec<_> = listed.iter().map(|m| (m.id, m.publisher)).collect();
    let mut want = vec![(published.id, Some(publisher)), (own.id, None)];
    want.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    assert_eq!(publishers, want, "listings carry the publisher");
}

/// Inserts `types.len()` messages, one ms apart, in an order unlike their ids'; returns
/// them newest first.
async fn insert_messages(s: &dyn Store, t: TenantId, types: &[&str]) -> Vec<Message> {
    let base = now();
    let mut messages: Vec<Message> = types
        .iter()
        .enumerate()
        .map(|(i, ty)| {
            let id = message_id_at(base + i as Millis);
            message(id, t, ty, &format!(r#"{{"i":{i}}}"#))
        })
        .collect();
    // Odd positions first, so insertion order cannot stand in for id order.
    let (odd, even): (Vec<_>, Vec<_>) = messages.iter().enumerate().partition(|(i, _)| i % 2 == 1);
    for (_, m) in odd.into_iter().chain(even) {
        s.insert_message(m).await.expect("insert message");
    }
    messages.reverse();
    messages
}

/// Follows cursors from the first page to the end; returns the ids and the first page.
async fn all_pages(
    s: &dyn Store,
    t: TenantId,
    limit: usize,
    event_type: Option<&str>,
) -> (Vec<MessageId>, Vec<MessageId>) {
    let mut ids = Vec::new();
    let mut first_page = None;
    let mut before = None;
    for _ in 0..100 {
        let query = MessageQuery {
            before,
            limit,
            event_type: event_type.map(str::to_owned),
        };
        let page = s.list_messages(t, &query).await.expect("list messages");
        assert!(
            page.items.len() <= limit,
            "a page holds at most `limit` messages"
        );
        let page_ids: Vec<_> = page.items.iter().map(|m| m.id).collect();
        first_page.get_or_insert_with(|| page_ids.clone());
        ids.extend(page_ids);
        match page.next_cursor {
            None => return (ids, first_page.unwrap_or_default()),
            Some(cursor) => {
                let id = MessageId::parse(&cursor);
                assert!(id.is_some(), "a cursor is a message id, got {cursor:?}");
                before = id;
            }
        }
    }
    panic!("listing did not end within 100 pages");
}

async fn list_messages_pages_newest_first(s: &dyn Store) {
    let t = TenantId::new();
    let newest_first = insert_messages(s, t, &["a"; 7]).await;
    let want: Vec<_> = newest_first.iter().map(|m| m.id).collect();

    let (ids, first_page) = all_pages(s, t, 3, None).await;
    assert_eq!(
        first_page,
        want[..3],
        "the first page holds the newest messages"
    );
    assert_eq!(
        ids, want,
        "following cursors lists every message once, newest first"
    );

    let whole = s
        .list_messages(
            t,
            &MessageQuery {
                limit: 100,
                ..MessageQuery::default()
            },
        )
        .await
        .expect("list messages");
    assert_eq!(
        whole.items.iter().map(|m| m.id).collect::<Vec<_>>(),
        want,
        "a large page holds everything"
    );
    assert_eq!(
        whole.next_cursor, None,
        "a page that reaches the end has no cursor"
    );
    assert_same_message(
        &whole.items[0],
        &newest_first[0],
        "listed messages are complete",
    );

    let older = s
        .list_messages(
            t,
            &MessageQuery {
                before: Some(want[2]),
                limit: 100,
                event_type: None,
            },
        )
        .await
        .expect("list messages");
    assert_eq!(
        older.items.iter().map(|m| m.id).collect::<Vec<_>>(),
        want[3..],
        "`before` lists strictly older messages"
    );
    assert!(
        s.list_messages(
            TenantId::new(),
            &MessageQuery {
                limit: 10,
                ..MessageQuery::default()
            }
        )
        .await
        .expect("list messages")
        .items
        .is_empty(),
        "another tenant lists none of the messages"
    );
}

async fn list_messages_filters_by_type(s: &dyn Store) {
    let t = TenantId::new();
    let types = [
        "order.created",
        "order.paid",
        "order.created",
        "order.paid",
        "order.created",
    ];
    let newest_first = insert_messages(s, t, &types).await;
    let want: Vec<_> = newest_first
        .iter()
        .filter(|m| m.event_type == "order.created")
        .map(|m| m.id)
        .collect();

    let (ids, _) = all_pages(s, t, 2, Some("order.created")).await;
    assert_eq!(
        ids, want,
        "the type filter lists only that type, newest first"
    );
    let (none, _) = all_pages(s, t, 2, Some("order.refunded")).await;
    assert!(none.is_empty(), "a type without messages lists nothing");
}

async fn idempotency_keys(s: &dyn Store) {
    let t = TenantId::new();
    let other = TenantId::new();
    let key = format!("order-{}", Ulid::new());
    let ttl = Duration::from_secs(24 * 3600);
    let ttl_ms = ttl.as_millis() as Millis;
    let t0 = now();
    let (first, second, third, fourth) = (
        MessageId::new(),
        MessageId::new(),
        MessageId::new(),
        MessageId::new(),
    );

    let claim = |tenant, id, at| s.claim_idempotency_key(tenant, &key, id, at, ttl);
    assert_eq!(
        claim(t, first, t0).await.expect("claim"),
        None,
        "a new key binds"
    );
    assert_eq!(
        claim(t, second, t0 + 1000).await.expect("claim"),
        Some(first),
        "a live key returns the message it is bound to"
    );
    assert_eq!(
        claim(other, third, t0 + 1000).await.expect("claim"),
        None,
        "keys are scoped to the tenant"
    );
    assert_eq!(
        claim(t, fourth, t0 + ttl_ms + 1).await.expect("claim"),
        None,
        "an expired key binds again"
    );
    assert_eq!(
        claim(t, second, t0 + ttl_ms + 2).await.expect("claim"),
        Some(fourth),
        "a rebound key returns its new message"
    );
}

// ---- deliveries and attempts ----------------------------------------------------------

const LEASE_MS: Millis = 30_000;

async fn claims_honour_leases(s: &dyn Store) {
    let t0 = now();
    let fresh = Delivery::fresh(MessageId::new(), EndpointId::new(), TenantId::new(), t0);

    assert!(
        s.claim_delivery(&fresh, 0, t0, t0 + LEASE_MS)
            .await
            .expect("claim"),
        "a delivery without a record can be claimed"
    );
    assert_eq!(
        s.get_delivery(fresh.message, fresh.endpoint)
            .await
            .expect("get delivery"),
        Some(Delivery {
            lease_until: Some(t0 + LEASE_MS),
            ..fresh.clone()
        }),
        "a claim creates a pending record holding the lease"
    );
    assert!(
        !s.claim_delivery(&fresh, 0, t0 + 1, t0 + 1 + LEASE_MS)
            .await
            .expect("claim"),
        "a live lease blocks another claim"
    );
    let later = t0 + LEASE_MS + 1;
    assert!(
        s.claim_delivery(&fresh, 0, later, later + LEASE_MS)
            .await
            .expect("claim"),
        "an expired lease can be claimed"
    );
    assert_eq!(
        s.get_delivery(fresh.message, fresh.endpoint)
            .await
            .expect("get delivery")
            .and_then(|d| d.lease_until),
        Some(later + LEASE_MS),
        "a claim moves the lease"
    );
}

async fn claims_check_expected_attempts(s: &dyn Store) {
    let t0 = now();
    let fresh = Delivery::fresh(MessageId::new(), EndpointId::new(), TenantId::new(), t0);

    assert!(
        !s.claim_delivery(&fresh, 1, t0, t0 + LEASE_MS)
            .await
            .expect("claim"),
        "a delivery without a record has made no attempt"
    );
    assert_eq!(
        s.get_delivery(fresh.message, fresh.endpoint)
            .await
            .expect("get delivery"),
        None,
        "a refused claim creates no record"
    );
    assert!(s
        .claim_delivery(&fresh, 0, t0, t0 + LEASE_MS)
        .await
        .expect("claim"));
    let retrying = Delivery {
        attempts: 1,
        next_attempt_at: Some(t0 + 5_000),
        last_status_code: Some(503),
        updated_at: t0 + 100,
        ..fresh.clone()
    };
    let first = attempt(&fresh, 1, t0 + 50, 503, AttemptOutcome::Retrying);
    assert!(s
        .record_attempt(&retrying, 0, Some(&first))
        .await
        .expect("record"));

    let later = t0 + 5_000;
    assert!(
        !s.claim_delivery(&fresh, 0, later, later + LEASE_MS)
            .await
            .expect("claim"),
        "a claim expecting fewer attempts than recorded fails"
    );
    assert!(
        !s.claim_delivery(&fresh, 2, later, later + LEASE_MS)
            .await
            .expect("claim"),
        "a claim expecting more attempts than recorded fails"
    );
    assert!(
        s.claim_delivery(&fresh, 1, later, later + LEASE_MS)
            .await
            .expect("claim"),
        "a claim expecting the recorded attempts succeeds once the lease is released"
    );

    let succeeded = Delivery {
        status: DeliveryStatus::Succeeded,
        attempts: 2,
        next_attempt_at: None,
        last_status_code: Some(200),
        updated_at: later + 100,
        ..retrying
    };
    let second = attempt(&fresh, 2, later + 50, 200, AttemptOutcome::Succeeded);
    assert!(s
        .record_attempt(&succeeded, 1, Some(&second))
        .await
        .expect("record"));
    let end = later + 10 * LEASE_MS;
    assert!(
        !s.claim_delivery(&fresh, 2, end, end + LEASE_MS)
            .await
            .expect("claim"),
        "a final delivery cannot be claimed"
    );
    assert_eq!(
        s.get_delivery(fresh.message, fresh.endpoint)
            .await
            .expect("get delivery"),
        Some(succeeded),
        "a refused claim changes nothing"
    );
}

async fn record_attempt_is_conditional(s: &dyn Store) {
    let t0 = now();
    let t = TenantId::new();
    let fresh = Delivery::fresh(MessageId::new(), EndpointId::new(), t, t0);
    assert!(s
        .claim_delivery(&fresh, 0, t0, t0 + LEASE_MS)
        .await
        .expect("claim"));
    let claimed = s
        .get_delivery(fresh.message, fresh.endpoint)
        .await
        .expect("get delivery");

    let retrying = Delivery {
        attempts: 1,
        next_attempt_at: Some(t0 + 5_000),
        last_status_code: Some(500),
        last_error: Some("HTTP 500".into()),
        lease_until: None,
        updated_at: t0 + 100,
        ..fresh.clone()
    };
    let first = attempt(&fresh, 1, t0 + 50, 500, AttemptOutcome::Retrying);
    assert!(
        !s.record_attempt(&retrying, 3, Some(&first))
            .await
            .expect("record"),
        "a record expecting other attempts than recorded is refused"
    );
    assert_eq!(
        s.get_delivery(fresh.message, fresh.endpoint)
            .await
            .expect("get delivery"),
        claimed,
        "a refused record leaves the delivery as it was"
    );
    assert!(
        s.list_attempts(t, fresh.message)
            .await
            .expect("list attempts")
            .is_empty(),
        "a refused record writes no attempt"
    );

    assert!(
        s.record_attempt(&retrying, 0, Some(&first))
            .await
            .expect("record"),
        "a record expecting the recorded attempts is written"
    );
    assert_eq!(
        s.get_delivery(fresh.message, fresh.endpoint)
            .await
            .expect("get delivery"),
        Some(retrying.clone()),
        "the delivery holds the recorded state, lease included"
    );
    assert_eq!(
        s.list_deliveries(fresh.message)
            .await
            .expect("list deliveries"),
        vec![retrying.clone()],
        "the delivery is listed for its message"
    );
    assert_eq!(
        s.list_attempts(t, fresh.message)
            .await
            .expect("list attempts"),
        vec![first.clone()],
        "the attempt is listed"
    );
    assert!(
        s.list_attempts(TenantId::new(), fresh.message)
            .await
            .expect("list attempts")
            .is_empty(),
        "attempts are not listed for another tenant"
    );

    let duplicate = attempt(&fresh, 1, t0 + 60, 500, AttemptOutcome::Retrying);
    assert!(
        !s.record_attempt(&retrying, 0, Some(&duplicate))
            .await
            .expect("record"),
        "a second writer of the same attempt is refused"
    );

    let later = t0 + 5_000;
    assert!(s
        .claim_delivery(&fresh, 1, later, later + LEASE_MS)
        .await
        .expect("claim"));
    let failed = Delivery {
        status: DeliveryStatus::Failed,
        attempts: 2,
        next_attempt_at: None,
        last_status_code: Some(410),
        last_error: None,
        lease_until: None,
        updated_at: later + 100,
        ..fresh.clone()
    };
    let second = attempt(&fresh, 2, later + 50, 410, AttemptOutcome::Failed);
    assert!(s
        .record_attempt(&failed, 1, Some(&second))
        .await
        .expect("record"));
    assert_eq!(
        s.list_attempts(t, fresh.message)
            .await
            .expect("list attempts"),
        vec![first, second],
        "attempts are listed oldest first"
    );
}

async fn record_attempt_settles_unclaimed_deliveries(s: &dyn Store) {
    let t0 = now();
    let t = TenantId::new();
    let message = MessageId::new();
    let claimed = Delivery::fresh(message, EndpointId::new(), t, t0);
    assert!(s
        .claim_delivery(&claimed, 0, t0, t0 + LEASE_MS)
        .await
        .expect("claim"));
    let settled = Delivery {
        status: DeliveryStatus::Failed,
        last_error: Some("endpoint deleted".into()),
        ..Delivery::fresh(message, EndpointId::new(), t, t0 + 1)
    };

    assert!(
        !s.record_attempt(&settled, 1, None).await.expect("record"),
        "a delivery without a record has made no attempt"
    );
    assert_eq!(
        s.get_delivery(message, settled.endpoint)
            .await
            .expect("get delivery"),
        None,
        "a refused record creates nothing"
    );
    assert!(
        s.record_attempt(&settled, 0, None).await.expect("record"),
        "a delivery without a record can be settled without an attempt"
    );
    assert_eq!(
        s.get_delivery(message, settled.endpoint)
            .await
            .expect("get delivery"),
        Some(settled.clone()),
        "the settled state is stored"
    );
    assert!(
        s.list_attempts(t, message)
            .await
            .expect("list attempts")
            .is_empty(),
        "settling without an attempt lists no attempt"
    );
    let mut listed = s.list_deliveries(message).await.expect("list deliveries");
    listed.sort_by_key(|d| d.endpoint);
    let mut want = vec![
        Delivery {
            lease_until: Some(t0 + LEASE_MS),
            ..claimed
        },
        settled,
    ];
    want.sort_by_key(|d| d.endpoint);
    assert_eq!(listed, want, "every delivery of the message is listed");
}

/// A first attempt made under the lease stored with its message has no delivery record
/// before its result.
async fn a_first_attempt_can_be_recorded_without_a_claim(s: &dyn Store) {
    let t0 = now();
    let t = TenantId::new();
    let fresh = Delivery::fresh(MessageId::new(), EndpointId::new(), t, t0);
    let succeeded = Delivery {
        status: DeliveryStatus::Succeeded,
        attempts: 1,
        last_status_code: Some(200),
        updated_at: t0 + 10,
        ..fresh.clone()
    };
    let made = attempt(&fresh, 1, t0 + 1, 200, AttemptOutcome::Succeeded);
    assert!(s
        .record_attempt(&succeeded, 0, Some(&made))
        .await
        .expect("record"));
    assert_eq!(
        s.get_delivery(fresh.message, fresh.endpoint)
            .await
            .expect("get delivery"),
        Some(succeeded.clone())
    );
    assert_eq!(
        s.list_attempts(t, fresh.message)
            .await
            .expect("list attempts"),
        vec![made.clone()]
    );
    let duplicate = attempt(&fresh, 1, t0 + 2, 200, AttemptOutcome::Succeeded);
    assert!(
        !s.record_attempt(&succeeded, 0, Some(&duplicate))
            .await
            .expect("record"),
        "a second first attempt is not recorded"
    );
    assert!(
        !s.claim_delivery(&fresh, 0, t0 + 3, t0 + 3 + LEASE_MS)
            .await
            .expect("claim"),
        "a recorded first attempt cannot be claimed again"
    );
    assert_eq!(
        s.list_attempts(t, fresh.message)
            .await
            .expect("list attempts"),
        vec![made]
    );
}

/// Every attempt of a long run of retries is listed, in order, whatever the state changes
/// in between (claims, a settling without a request, a reopen) and however the store
/// keeps them.
async fn the_attempt_log_keeps_every_attempt(s: &dyn Store) {
    const ATTEMPTS: u32 = 12;
    let t0 = now();
    let t = TenantId::new();
    let message = MessageId::new();
    let fresh = Delivery::fresh(message, EndpointId::new(), t, t0);
    let other = Delivery::fresh(message, EndpointId::new(), t, t0);
    let mut want = Vec::new();
    let mut state = fresh.clone();
    for number in 1..=ATTEMPTS {
        let at = t0 + Millis::from(number) * 10;
        assert!(
            s.claim_delivery(&fresh, number - 1, at, at + LEASE_MS)
                .await
                .expect("claim"),
            "attempt {number} can be claimed"
        );
        if number == 5 {
            // A refused result adds nothing to the log.
            let stale = attempt(&fresh, number, at, 500, AttemptOutcome::Retrying);
            assert!(!s
                .record_attempt(&state, number, Some(&stale))
                .await
                .expect("record"));
        }
        let made = Attempt {
            response: "x".repeat(number as usize * 50),
            error: (number % 2 == 0).then(|| "connection reset".to_owned()),
            status_code: (number % 3 != 0).then_some(500),
            ..attempt(&fresh, number, at + 1, 500, AttemptOutcome::Retrying)
        };
        state = Delivery {
            attempts: number,
            next_attempt_at: Some(at + 5),
            last_status_code: made.status_code,
            last_error: made.error.clone(),
            lease_until: None,
            updated_at: at + 2,
            ..fresh.clone()
        };
        assert!(s
            .record_attempt(&state, number - 1, Some(&made))
            .await
            .expect("record"));
        want.push(made);
        if number == 3 {
            // Another delivery of the same message, logged beside this one.
            let theirs = attempt(&other, 1, at + 1, 200, AttemptOutcome::Succeeded);
            let done = Delivery {
                status: DeliveryStatus::Succeeded,
                attempts: 1,
                last_status_code: Some(200),
                ..other.clone()
            };
            assert!(s
                .record_attempt(&done, 0, Some(&theirs))
                .await
                .expect("record"));
            want.push(theirs);
        }
    }
    want.sort_by_key(|a| (a.at, a.id));
    assert_eq!(
        s.list_attempts(t, message).await.expect("list attempts"),
        want,
        "every attempt is listed, oldest first"
    );
    assert!(
        s.list_attempts(TenantId::new(), message)
            .await
            .expect("list attempts")
            .is_empty(),
        "another tenant lists none"
    );

    // Settled without a request (the endpoint went away), then reopened: the log stays.
    let settled = Delivery {
        status: DeliveryStatus::Failed,
        next_attempt_at: None,
        last_error: Some("endpoint_disabled".into()),
        updated_at: t0 + 1_000,
        ..state.clone()
    };
    assert!(s
        .record_attempt(&settled, ATTEMPTS, None)
        .await
        .expect("record"));
    assert!(s
        .reopen_delivery(message, fresh.endpoint, ATTEMPTS, t0 + 2_000)
        .await
        .expect("reopen"));
    assert_eq!(
        s.get_delivery(message, fresh.endpoint)
            .await
            .expect("get delivery"),
        Some(Delivery {
            status: DeliveryStatus::Pending,
            next_attempt_at: Some(t0 + 2_000),
            updated_at: t0 + 2_000,
            ..settled
        })
    );
    assert_eq!(
        s.list_attempts(t, message).await.expect("list attempts"),
        want,
        "state changes without an attempt keep the log"
    );
}

// ---- endpoint health and replays --------------------------------------------------------

async fn endpoint_health_changes_touch_only_health(s: &dyn Store) {
    let t0 = now();
    let t = TenantId::new();
    let e = endpoint(t, None, t0);
    s.put_endpoint(&e).await.expect("put endpoint");
    let get = || async { s.get_endpoint(t, e.id).await.expect("get").expect("stored") };
    let change = |c: HealthChange| async move {
        s.update_endpoint_health(t, e.id, &c)
            .await
            .expect("update health")
    };

    assert!(
        !change(HealthChange::Recovered).await,
        "recovering a healthy endpoint changes nothing"
    );
    assert!(change(HealthChange::Failing { at: t0 + 10 }).await);
    assert!(
        !change(HealthChange::Failing { at: t0 + 20 }).await,
        "a later failure keeps the first failure's time"
    );
    assert_eq!(
        get().await,
        Endpoint {
            failing_since: Some(t0 + 10),
            ..e.clone()
        },
        "only failing_since changed"
    );

    let reason = "every attempt failed; disabled automatically".to_string();
    assert!(
        change(HealthChange::Disable {
            reason: reason.clone(),
            at: t0 + 30
        })
        .await
    );
    let disabled = Endpoint {
        status: EndpointStatus::Disabled,
        disabled_reason: Some(reason.clone()),
        disabled_at: Some(t0 + 30),
        failing_since: Some(t0 + 10),
        updated_at: t0 + 30,
        ..e.clone()
    };
    assert_eq!(
        get().await,
        disabled,
        "disabling sets status, reason and time"
    );
    assert!(
        !change(HealthChange::Disable {
            reason: "again".into(),
            at: t0 + 40
        })
        .await,
        "a disabled endpoint is not disabled twice"
    );
    assert!(change(HealthChange::Recovered).await);
    assert_eq!(
        get().await,
        Endpoint {
            failing_since: None,
            ..disabled
        },
        "recovering clears failing_since only"
    );

    let other = TenantId::new();
    assert!(
        !s.update_endpoint_health(other, e.id, &HealthChange::Failing { at: t0 })
            .await
            .expect("update health"),
        "another tenant's endpoint is not changed"
    );
    assert!(
        !s.update_endpoint_health(t, EndpointId::new(), &HealthChange::Failing { at: t0 })
            .await
            .expect("update health"),
        "a missing endpoint is not created"
    );
    assert_eq!(
        s.get_endpoint(t, e.id)
            .await
            .expect("get")
            .map(|e| e.failing_since),
        Some(None)
    );
    assert_eq!(s.list_endpoints(other).await.expect("list"), Vec::new());
}

/// Takes a fresh delivery through `attempts` attempts to `status`.
async fn settle(
    s: &dyn Store,
    message: MessageId,
    endpoint: EndpointId,
    tenant: TenantId,
    attempts: u32,
    status: DeliveryStatus,
) -> Delivery {
    let t0 = now();
    let fresh = Delivery::fresh(message, endpoint, tenant, t0);
    assert!(s
        .claim_delivery(&fresh, 0, t0, t0 + LEASE_MS)
        .await
        .expect("claim"));
    let settled = Delivery {
        status,
        attempts,
        last_status_code: Some(500),
        last_error: Some("HTTP 500".into()),
        lease_until: None,
        updated_at: t0 + 1,
        ..fresh.clone()
    };
    let outcome = match status {
        DeliveryStatus::Succeeded => AttemptOutcome::Succeeded,
        DeliveryStatus::Failed => AttemptOutcome::Failed,
        DeliveryStatus::Pending => AttemptOutcome::Retrying,
    };
    let made = attempt(&fresh, attempts, t0, 500, outcome);
    assert!(s
        .record_attempt(&settled, 0, Some(&made))
        .await
        .expect("record"));
    settled
}

async fn failed_deliveries_are_listed_by_endpoint_and_time(s: &dyn Store) {
    let base = now() - 600_000;
    let t = TenantId::new();
    let (ep, other_ep) = (EndpointId::new(), EndpointId::new());
    let ids: Vec<MessageId> = (0..5).map(|i| message_id_at(base + i * 1_000)).collect();
    let failed = DeliveryStatus::Failed;
    let m0 = settle(s, ids[0], ep, t, 1, failed).await;
    let m1 = settle(s, ids[1], ep, t, 3, failed).await;
    settle(s, ids[2], ep, t, 1, DeliveryStatus::Succeeded).await;
    let m3 = settle(s, ids[3], ep, t, 1, failed).await;
    settle(s, ids[3], other_ep, t, 1, failed).await;
    // Pending: claimed, no result yet.
    let pending = Delivery::fresh(ids[4], ep, t, base);
    assert!(s
        .claim_delivery(&pending, 0, now(), now() + LEASE_MS)
        .await
        .expect("claim"));

    let list = |since: Millis, until: Option<Millis>, after: Option<MessageId>, limit: usize| {
        let query = FailedQuery {
            since,
            until,
            after,
            limit,
        };
        async move {
            s.list_failed_deliveries(t, ep, &query)
                .await
                .expect("list failed deliveries")
                .into_iter()
                .map(|d| d.message)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(base, None, None, 100).await,
        vec![m0.message, m1.message, m3.message],
        "only failed deliveries of this endpoint, oldest first"
    );
    assert_eq!(
        list(base + 1_000, None, None, 100).await,
        vec![m1.message, m3.message],
        "messages received before `since` are left out"
    );
    assert_eq!(
        list(base, Some(base + 3_000), None, 100).await,
        vec![m0.message, m1.message],
        "`until` is exclusive"
    );
    assert_eq!(
        list(base, None, None, 2).await,
        vec![m0.message, m1.message]
    );
    assert_eq!(
        list(base, None, Some(m1.message), 2).await,
        vec![m3.message],
        "paging continues after the last message"
    );
    assert_eq!(list(base, None, Some(m3.message), 2).await, Vec::new());
    assert_eq!(
        s.list_failed_deliveries(
            t,
            ep,
            &FailedQuery {
                since: base,
                until: None,
                after: None,
                limit: 1
            }
        )
        .await
        .expect("list")
        .first(),
        Some(&m0),
        "the deliveries are returned whole"
    );
    assert_eq!(
        s.list_failed_deliveries(
            TenantId::new(),
            ep,
            &FailedQuery {
                since: base,
                until: None,
                after: None,
                limit: 100
            }
        )
        .await
        .expect("list"),
        Vec::new(),
        "another tenant sees none"
    );
}

async fn reopen_delivery_is_conditional(s: &dyn Store) {
    let base = now() - 600_000;
    let t = TenantId::new();
    let ep = EndpointId::new();
    let id = message_id_at(base);
    let failed = settle(s, id, ep, t, 3, DeliveryStatus::Failed).await;
    let succeeded_id = message_id_at(base + 1);
    settle(s, succeeded_id, ep, t, 1, DeliveryStatus::Succeeded).await;
    let at = now();
    assert!(
        !s.reopen_delivery(id, ep, 2, at).await.expect("reopen"),
        "a reopen expecting other attempts is refused"
    );
    assert!(
        !s.reopen_delivery(succeeded_id, ep, 1, at)
            .await
            .expect("reopen"),
        "a succeeded delivery is not reopened"
    );
    assert!(
        !s.reopen_delivery(message_id_at(base), ep, 0, at)
            .await
            .expect("reopen"),
        "a delivery without a record is not created"
    );
    assert!(s.reopen_delivery(id, ep, 3, at).await.expect("reopen"));
    assert!(
        !s.reopen_delivery(id, ep, 3, at).await.expect("reopen"),
        "of two reopens only one succeeds"
    );
    assert_eq!(
        s.get_delivery(id, ep).await.expect("get"),
        Some(Delivery {
            status: DeliveryStatus::Pending,
            next_attempt_at: Some(at),
            lease_until: None,
            updated_at: at,
            ..failed.clone()
        }),
        "a reopened delivery is pending with its attempts and last result"
    );
    let query = FailedQuery {
        since: base,
        until: None,
        after: None,
        limit: 100,
    };
    assert_eq!(
        s.list_failed_deliveries(t, ep, &query).await.expect("list"),
        Vec::new(),
        "a reopened delivery is no longer listed as failed"
    );
    assert!(
        s.claim_delivery(&failed, 3, at, at + LEASE_MS)
            .await
            .expect("claim"),
        "the next attempt can be claimed"
    );
    // Failing again lists it again.
    let again = Delivery {
        status: DeliveryStatus::Failed,
        attempts: 4,
        lease_until: None,
        updated_at: at + 1,
        ..failed.clone()
    };
    let made = attempt(&failed, 4, at, 500, AttemptOutcome::Failed);
    assert!(s
        .record_attempt(&again, 3, Some(&made))
        .await
        .expect("record"));
    assert_eq!(
        s.list_failed_deliveries(t, ep, &query).await.expect("list"),
        vec![again]
    );
}

// ---- event types --------------------------------------------------------------------

fn event_type(name: &str, sample: &str, created_at: Millis) -> CustomEventType {
    CustomEventType {
        name: name.into(),
        provider: "contract".into(),
        description: "a type the operator added".into(),
        sample: RawValue::from_string(sample.to_owned()).expect("valid JSON sample"),
        created_at,
    }
}

#[track_caller]
fn assert_same_event_type(got: &CustomEventType, want: &CustomEventType, what: &str) {
    let view = |d: &CustomEventType| {
        (
            d.name.clone(),
            d.provider.clone(),
            d.description.clone(),
            // Verbatim, as the operator sent it.
            d.sample.get().to_owned(),
            d.created_at,
        )
    };
    assert_eq!(view(got), view(want), "{what}");
}

async fn event_types(s: &dyn Store) {
    // Names are fresh (the store is shared between runs) and sort apart from their
    // creation order; one has an inner space and a non-ASCII character, as names may.
    let tag = Ulid::new();
    let t0 = now();
    let zebra = event_type(&format!("zz contract.{tag}"), r#"{ "z": [1, 2] }"#, t0);
    let alpha = event_type(&format!("aa contract.{tag} é"), r#"{"a":"é"}"#, t0 + 1);
    for def in [&zebra, &alpha] {
        s.create_event_type(def).await.expect("create event type");
    }

    let got = s
        .get_event_type(&alpha.name)
        .await
        .expect("get event type")
        .expect("a created type is found by name");
    assert_same_event_type(&got, &alpha, "a type is stored as created");
    assert!(
        s.get_event_type(&format!("missing contract.{tag}"))
            .await
            .expect("get event type")
            .is_none(),
        "an unknown type is not found"
    );

    let duplicate = event_type(&zebra.name, "{}", t0 + 5);
    match s.create_event_type(&duplicate).await {
        Err(Error::Conflict { code, .. }) => assert_eq!(code, "event_type_exists"),
        other => panic!("a duplicate type must be an event_type_exists conflict, got {other:?}"),
    }
    let kept = s
        .get_event_type(&zebra.name)
        .await
        .expect("get event type")
        .expect("found");
    assert_same_event_type(&kept, &zebra, "a duplicate create leaves the first type");

    let listed = s.list_event_types().await.expect("list event types");
    assert!(
        listed.windows(2).all(|w| w[0].name < w[1].name),
        "types are listed sorted by name, each once"
    );
    let mine: Vec<_> = listed
        .iter()
        .filter(|d| d.name.contains(&tag.to_string()))
        .collect();
    assert_eq!(mine.len(), 2, "both created types are listed");
    assert_same_event_type(mine[0], &alpha, "listed first by name");
    assert_same_event_type(mine[1], &zebra, "listed second by name");
}

// ---- queue ----------------------------------------------------------------------------

/// How long a check waits for something it expects; generous, as it bounds only failures.
const PATIENCE: Duration = Duration::from_secs(10);
/// A visibility timeout or delay short enough to wait out in a test.
const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(60);
/// Clock granularity allowed when checking that a wait was not cut short.
const SLACK: Duration = Duration::from_millis(50);

fn body(tag: &str) -> String {
    format!("{tag}-{}", Ulid::new())
}

fn outgoing(body: &str, delay: Duration) -> Outgoing {
    Outgoing {
        body: body.to_owned(),
        delay,
    }
}

/// Receives until something arrives or patience runs out.
async fn receive_some(q: &dyn PullQueue, max: usize, visibility: Duration) -> Vec<Received> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = q.receive(max, visibility).await.expect("receive");
        assert!(got.len() <= max, "receive returns at most `max` messages");
        if !got.is_empty() || Instant::now() >= deadline {
            return got;
        }
        q.wait_ready(Duration::from_millis(100)).await;
    }
}

#[track_caller]
fn only(mut got: Vec<Received>, body: &str, what: &str) -> Received {
    assert_eq!(got.len(), 1, "{what}: expected one message, got {got:?}");
    let r = got.remove(0);
    assert_eq!(r.body, body, "{what}: wrong message");
    r
}

async fn assert_nothing_visible(q: &dyn PullQueue, what: &str) {
    let got = q.receive(10, LONG).await.expect("receive");
    assert!(got.is_empty(), "{what}: got {got:?}");
}

async fn send_receive_ack(q: &dyn PullQueue) {
    let b = body("basic");
    q.send(vec![outgoing(&b, Duration::ZERO)])
        .await
        .expect("send");
    let r = only(
        receive_some(q, 10, SHORT).await,
        &b,
        "a sent message is received",
    );
    let received = Instant::now();
    assert_eq!(r.receive_count, 1, "a first receive counts 1");

    let early = q.receive(10, LONG).await.expect("receive");
    assert!(
        early.is_empty() || received.elapsed() >= SHORT - SLACK,
        "a received message is hidden while its visibility lasts, got {early:?}"
    );
    let mut receipts = vec![r.receipt];
    receipts.extend(early.into_iter().map(|r| r.receipt));
    q.ack(&receipts).await.expect("ack");
    tokio::time::sleep(SHORT * 2).await;
    assert_nothing_visible(q, "an acked message is gone").await;
}

async fn visibility_timeout_redelivers(q: &dyn PullQueue) {
    let b = body("visibility");
    q.send(vec![outgoing(&b, Duration::ZERO)])
        .await
        .expect("send");
    let first = only(
        receive_some(q, 10, SHORT).await,
        &b,
        "a sent message is received",
    );
    let received = Instant::now();
    let again = only(
        receive_some(q, 10, LONG).await,
        &b,
        "an unacked message comes back after its visibility timeout",
    );
    assert!(
        received.elapsed() >= SHORT - SLACK,
        "a message came back before its visibility timeout ended"
    );
    assert_eq!(again.receive_count, 2, "a redelivery counts 2");
    assert_ne!(
        again.receipt, first.receipt,
        "each receive has its own receipt"
    );
    q.ack(&[again.receipt]).await.expect("ack");
}

async fn stale_receipt_does_not_ack(q: &dyn PullQueue, traits: QueueTraits) {
    let b = body("stale");
    q.send(vec![outgoing(&b, Duration::ZERO)])
        .await
        .expect("send");
    let first = only(
        receive_some(q, 10, SHORT).await,
        &b,
        "a sent message is received",
    );
    let second = only(receive_some(q, 10, SHORT).await, &b, "redelivered");
    q.ack(&[first.receipt])
        .await
        .expect("a stale ack is not an error");
    if !traits.stale_receipts_rejected {
        // The stale ack may have deleted the message; the current receipt surely does,
        // and acking a deleted message is no error either. Later checks find the queue
        // empty only if it did.
        q.ack(&[second.receipt])
            .await
            .expect("an ack after a stale ack is not an error");
        return;
    }
    let third = only(
        receive_some(q, 10, LONG).await,
        &b,
        "an ack with a stale receipt leaves the message",
    );
    assert_eq!(third.receive_count, 3);
    assert_ne!(third.receipt, second.receipt);
    q.ack(&[third.receipt]).await.expect("ack");
}

async fn delay_hides_until_due(q: &dyn PullQueue) {
    let b = body("delayed");
    let delay = Duration::from_millis(500);
    let sent = Instant::now();
    q.send(vec![outgoing(&b, delay)]).await.expect("send");
    let got = q.receive(10, LONG).await.expect("receive");
    let got = if got.is_empty() {
        receive_some(q, 10, LONG).await
    } else {
        got
    };
    let r = only(got, &b, "a delayed message arrives when due");
    assert!(
        sent.elapsed() >= delay - SLACK,
        "a delayed message was received before its delay ended"
    );
    assert_eq!(r.receive_count, 1);
    q.ack(&[r.receipt]).await.expect("ack");
}

async fn release_makes_visible_again(q: &dyn PullQueue) {
    let b = body("release");
    q.send(vec![outgoing(&b, Duration::ZERO)])
        .await
        .expect("send");
    let first = only(
        receive_some(q, 10, LONG).await,
        &b,
        "a sent message is received",
    );
    q.release(&first.receipt, Duration::ZERO)
        .await
        .expect("release");
    let second = only(
        receive_some(q, 10, LONG).await,
        &b,
        "a message released without delay is visible again",
    );
    assert_eq!(second.receive_count, 2);

    let delay = Duration::from_millis(400);
    let released = Instant::now();
    q.release(&second.receipt, delay).await.expect("release");
    let third = only(
        receive_some(q, 10, LONG).await,
        &b,
        "a message released with a delay comes back",
    );
    assert!(
        released.elapsed() >= delay - SLACK,
        "a released message came back before its delay ended"
    );
    assert_eq!(third.receive_count, 3);
    q.ack(&[third.receipt]).await.expect("ack");
}

async fn dead_letter_removes_from_the_queue(q: &dyn PullQueue) {
    let b = body("dead");
    q.send(vec![outgoing(&b, Duration::ZERO)])
        .await
        .expect("send");
    let r = only(
        receive_some(q, 10, SHORT).await,
        &b,
        "a sent message is received",
    );
    q.dead_letter(&r.receipt, "contract check")
        .await
        .expect("dead-letter");
    // Past the visibility timeout: had the message stayed, it would be visible again.
    tokio::time::sleep(SHORT * 3).await;
    assert_nothing_visible(q, "a dead-lettered message leaves the queue").await;
}

async fn batch_of_ten_is_all_received(q: &dyn PullQueue) {
    let bodies: BTreeSet<String> = (0..10).map(|i| body(&format!("batch{i}"))).collect();
    q.send(bodies.iter().map(|b| outgoing(b, Duration::ZERO)).collect())
        .await
        .expect("send a batch of ten");

    let mut seen = BTreeSet::new();
    let mut receipts = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while seen != bodies && Instant::now() < deadline {
        for r in receive_some(q, 3, LONG).await {
            assert!(bodies.contains(&r.body), "unexpected message {r:?}");
            seen.insert(r.body);
            receipts.push(r.receipt);
        }
    }
    assert_eq!(seen, bodies, "every message of a batch is received");
    q.ack(&receipts).await.expect("ack");
}
