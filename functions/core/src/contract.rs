//! The contract of the storage and queue ports, as checks that panic on a violation. Every
//! adapter runs it: the embedded ones in their unit tests, the DynamoDB and SQS ones
//! against real tables and queues. The checks use fresh ids, so store runs can share tables.

use std::collections::BTreeSet;
use std::future::Future;
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
    Ordering, Page, PageQuery, PortalSession, Tenant,
};
use crate::operational::OPERATOR_TENANT;
use crate::ports::{
    DeadLetters, FirstAttempts, Outgoing, PullQueue, Received, Store, TenantStore, Written,
};
use crate::signing::{EndpointSecrets, Secret};

/// What a store promises beyond what every store must, so a check of such a promise runs
/// only against stores that make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTraits {
    /// Conditional writes made at the same time are serialized: of two made from the same
    /// version one fails, and a failed one undoes nothing of the other's. SQLite and
    /// DynamoDB promise it; moto does not for transactions (a cancelled one restores a
    /// copy of the whole table taken before it began, undoing what other requests wrote
    /// meanwhile), so against moto those checks run one write after the other.
    pub concurrent_writes_serialized: bool,
}

impl StoreTraits {
    /// The embedded store, and DynamoDB itself.
    pub const SERIALIZED: StoreTraits = StoreTraits {
        concurrent_writes_serialized: true,
    };
    /// moto standing in for DynamoDB.
    pub const MOTO: StoreTraits = StoreTraits {
        concurrent_writes_serialized: false,
    };
}

/// Runs every store check.
pub async fn store_contract(store: Arc<dyn Store>, traits: StoreTraits) {
    let s = store.as_ref();
    tenants_and_keys(s).await;
    sub_accounts(s).await;
    revocation_is_scoped_to_the_tenant(s).await;
    operator_key_is_set_once(s).await;
    domains(s).await;
    deleting_a_domain_deletes_its_scoped_endpoints_only(s).await;
    endpoints(s).await;
    endpoints_are_isolated_by_tenant(s).await;
    endpoint_writes_are_conditional_on_the_version(s).await;
    of_two_concurrent_updates_one_is_refused(s, traits).await;
    the_endpoint_limit_holds_under_concurrent_creates(s, traits).await;
    endpoint_groups_change_as_one(s, traits).await;
    listings_page_in_key_order(s).await;
    insert_message_keeps_the_first_version(s).await;
    a_leased_insert_leases_the_first_attempts_once(s).await;
    a_page_is_stored_once_and_its_messages_read_as_any(s).await;
    a_pages_first_answers_read_as_recorded_attempts(s).await;
    messages_are_listed_apart_from_the_tenants_other_records(s).await;
    messages_keep_their_publisher(s).await;
    list_messages_pages_newest_first(s).await;
    list_messages_filters_by_type(s).await;
    list_messages_pages_through_a_large_log(s).await;
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
    portal_login_tokens_are_single_use_and_expire(s).await;
    portal_sessions_expire_and_end(s).await;
    the_operator_tenant_holds_endpoints_and_messages(s).await;
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

/// Runs every check of the dead letters of `queue`, read and redriven through
/// `dead_letters`. Other dead letters may be there already; the checks look only at their
/// own, and leave the queue and the dead letters as they found them.
pub async fn dead_letter_contract(queue: Arc<dyn PullQueue>, dead_letters: Arc<dyn DeadLetters>) {
    let (q, d) = (queue.as_ref(), dead_letters.as_ref());
    dead_letters_are_listed_with_their_reason_in_pages(q, d).await;
    a_redrive_sends_the_chosen_dead_letters_back_as_new_messages(q, d).await;
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

/// Endpoints a tenant may have in these checks, far above what any check creates.
const NO_LIMIT: usize = 1_000_000;

/// For other crates' tests: stores a new endpoint with no limit on the tenant's endpoints.
pub async fn stored_endpoint<S: crate::ports::EndpointStore + ?Sized>(store: &S, e: &Endpoint) {
    store
        .create_endpoint(e, NO_LIMIT)
        .await
        .expect("create endpoint");
}

/// Runs the futures at the same time where the store serializes concurrent writes, else
/// one after the other (see [`StoreTraits`]); their results in order.
async fn together<F: Future>(traits: StoreTraits, futures: Vec<F>) -> Vec<F::Output> {
    if traits.concurrent_writes_serialized {
        futures::future::join_all(futures).await
    } else {
        let mut out = Vec::with_capacity(futures.len());
        for f in futures {
            out.push(f.await);
        }
        out
    }
}

/// Follows cursors from the first page to the end, `limit` items a page; returns every
/// item in order and the number of pages.
async fn every_page<T, F, Fut>(limit: usize, mut fetch: F) -> (Vec<T>, usize)
where
    F: FnMut(PageQuery) -> Fut,
    Fut: Future<Output = crate::Result<Page<T>>>,
{
    let mut items = Vec::new();
    let mut pages = 0;
    let mut after = None;
    loop {
        let page = fetch(PageQuery {
            after: after.take(),
            limit,
        })
        .await
        .expect("list a page");
        pages += 1;
        assert!(page.items.len() <= limit, "a page holds at most the limit");
        let more = page.next_cursor.is_some();
        if more {
            assert_eq!(page.items.len(), limit, "only the last page is short");
        }
        items.extend(page.items);
        match page.next_cursor {
            Some(cursor) => after = Some(cursor),
            None => return (items, pages),
        }
        assert!(pages < 100_000, "the cursors never end");
    }
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
        filter: None,
        created_at,
        updated_at: created_at,
        version: 1,
        headers: Default::default(),
        auth: None,
        ordering: Default::default(),
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
    let mut by_id = vec![first.clone(), second.clone()];
    by_id.sort_by_key(|k| k.id);
    assert_eq!(
        s.list_api_keys(t.id, &PageQuery::first(10))
            .await
            .expect("list keys")
            .items,
        by_id,
        "keys are listed by id"
    );
    assert_eq!(
        s.get_api_key(t.id, second.id).await.expect("get key"),
        Some(second.clone()),
        "a key is found by tenant and id"
    );
    assert_eq!(
        s.get_api_key(TenantId::new(), second.id)
            .await
            .expect("get key"),
        None,
        "a key is not found under another tenant"
    );

    let at = t0 + 10;
    assert_eq!(
        s.revoke_api_key(t.id, first.id, at, true)
            .await
            .expect("revoke"),
        Written::Done,
        "revoking a live key of the tenant succeeds"
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
    assert_eq!(
        s.revoke_api_key(t.id, first.id, at + 10, true)
            .await
            .expect("revoke"),
        Written::Stale,
        "a revocation of a key read as live is refused once it is revoked"
    );
    assert_eq!(
        s.revoke_api_key(t.id, first.id, at + 10, false)
            .await
            .expect("revoke"),
        Written::Done,
        "revoking a revoked key of the tenant still reports the key"
    );
    assert_eq!(
        s.find_api_key(&first.hash).await.expect("find key"),
        Some(revoked.clone()),
        "revoking again keeps the first revocation time"
    );
    assert_eq!(
        s.revoke_api_key(t.id, ApiKeyId::new(), at, false)
            .await
            .expect("revoke"),
        Written::Missing,
        "revoking an unknown key reports it missing"
    );
    let listed = s
        .list_api_keys(t.id, &PageQuery::first(10))
        .await
        .expect("list keys")
        .items;
    assert!(
        listed.contains(&revoked) && listed.contains(&second) && listed.len() == 2,
        "revoked keys stay listed"
    );
}

async fn sub_accounts(s: &dyn Store) {
    let t0 = now();
    let parent = tenant(t0);
    s.create_tenant(&parent, &api_key(parent.id, t0))
        .await
        .expect("create tenant");
    let older = Tenant {
        parent: Some(parent.id),
        ..tenant(t0 + 1)
    };
    let younger = Tenant {
        parent: Some(parent.id),
        ..tenant(t0 + 2)
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
    let (listed, pages) = every_page(
        1,
        |q| async move { s.list_sub_accounts(parent.id, &q).await },
    )
    .await;
    // Ids minted in one millisecond order at random among themselves.
    let mut by_id = vec![older.clone(), younger];
    by_id.sort_by_key(|t| t.id);
    assert_eq!(
        (listed, pages),
        (by_id, 2),
        "a parent lists its sub-accounts by id (so oldest first), a page at a time"
    );
    for (who, id) in [
        ("a sub-account", older.id),
        ("an unrelated tenant", unrelated.id),
        ("an unknown tenant", TenantId::new()),
    ] {
        let page = s
            .list_sub_accounts(id, &PageQuery::first(10))
            .await
            .expect("list");
        assert!(
            page.items.is_empty() && page.next_cursor.is_none(),
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

    assert_eq!(
        s.revoke_api_key(other.id, owner_key.id, t0 + 1, false)
            .await
            .expect("revoke"),
        Written::Missing,
        "a tenant cannot revoke another tenant's key"
    );
    assert_eq!(
        s.find_api_key(&owner_key.hash).await.expect("find key"),
        Some(owner_key.clone()),
        "a refused revocation leaves the key live"
    );
    assert_eq!(
        s.list_api_keys(other.id, &PageQuery::first(10))
            .await
            .expect("list keys")
            .items,
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
    let (listed, pages) = every_page(1, |q| async move { s.list_domains(t, &q).await }).await;
    assert_eq!(
        (listed, pages),
        (vec![blog, shop], 2),
        "a tenant lists its own domains by name, a page at a time"
    );
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
        stored_endpoint(s, e).await;
    }

    assert_eq!(
        s.delete_domain(TenantId::new(), shop, None)
            .await
            .expect("delete domain"),
        Written::Missing,
        "deleting a domain the tenant does not have reports it missing"
    );
    assert_eq!(
        s.delete_domain(t, shop, Some(t0 - 1))
            .await
            .expect("delete domain"),
        Written::Stale,
        "a delete of another incarnation of the domain (created at another time) is refused"
    );
    assert!(
        s.get_endpoint(t, in_shop.id)
            .await
            .expect("get endpoint")
            .is_some(),
        "a refused domain delete deletes none of its endpoints"
    );
    assert_eq!(
        s.delete_domain(t, shop, Some(t0))
            .await
            .expect("delete domain"),
        Written::Done,
        "deleting an existing domain succeeds"
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
    assert_eq!(
        s.delete_domain(t, shop, None).await.expect("delete domain"),
        Written::Missing,
        "deleting a deleted domain reports it missing"
    );
    assert_eq!(
        s.list_domains(t, &PageQuery::first(10))
            .await
            .expect("list domains")
            .items,
        vec![domain(t, blog, t0)],
        "the other domain stays"
    );
}

async fn endpoints(s: &dyn Store) {
    let t0 = now();
    let t = TenantId::new();
    let mut first = endpoint(t, None, t0);
    first.event_types = Some(vec!["order.created".into(), "order.paid".into()]);
    // A rotated secret and ed25519 key, so the retired ones must round-trip too.
    first.secrets.set_signing(crate::signing::Signing::Both);
    first.secrets.rotate(Secret::generate(), t0, 86_400_000);
    first.rate_limit = Some(7);
    first.filter = Some(
        crate::filter::Filter::parse(serde_json::json!({"or": [
            {"path": "order.total", "gte": 100.5},
            {"path": "order.items.sku", "in": ["A-1", 2, true, null]},
            {"not": {"path": "test", "exists": true}}
        ]}))
        .expect("valid filter"),
    );
    first.failing_since = Some(t0 - 10);
    first.headers = [
        ("x-tenant".to_string(), "acme".to_string()),
        ("x-trace".to_string(), "a b\tc".to_string()),
    ]
    .into();
    let key = crate::credentials::CredentialsKey::generate();
    let credentials = crate::credentials::ReceiverAuth::OAuth2 {
        token_url: "https://id.example.com/oauth/token".into(),
        client_id: "hookline".into(),
        client_secret: "s3cr3t-contract".into(),
        scope: Some("hooks:write".into()),
    };
    first.auth = Some(key.seal(&credentials, first.id).expect("seal"));
    let second = endpoint(t, Some("shop.example.com"), t0 + 1);
    stored_endpoint(s, &first).await;
    stored_endpoint(s, &second).await;

    let read = s.get_endpoint(t, first.id).await.expect("get endpoint");
    assert_eq!(
        read,
        Some(first.clone()),
        "an endpoint round-trips with every field, at version 1"
    );
    let sealed = read.and_then(|e| e.auth).expect("credentials stored");
    assert_eq!(
        key.open(&sealed, first.id),
        Ok(credentials),
        "the stored credentials open with the key, for this endpoint"
    );
    assert!(
        !sealed
            .sealed
            .windows(b"s3cr3t-contract".len())
            .any(|w| w == b"s3cr3t-contract"),
        "the secret is not stored in the clear"
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
        filter: None,
        headers: Default::default(),
        auth: None,
        updated_at: t0 + 100,
        ordering: Ordering::Strict,
        ..first.clone()
    };
    assert_eq!(
        s.update_endpoint(&updated, 1)
            .await
            .expect("update endpoint"),
        Written::Done
    );
    let stored = Endpoint {
        version: 2,
        ..updated.clone()
    };
    assert_eq!(
        s.get_endpoint(t, first.id).await.expect("get endpoint"),
        Some(stored.clone()),
        "an update replaces every field and moves the version on"
    );
    assert_eq!(
        s.list_endpoints(t).await.expect("list endpoints"),
        vec![stored, second.clone()],
        "an updated endpoint is listed once, in its place"
    );

    assert_eq!(
        s.delete_endpoint(t, first.id, None)
            .await
            .expect("delete endpoint"),
        Written::Done,
        "deleting an endpoint succeeds"
    );
    assert_eq!(
        s.get_endpoint(t, first.id).await.expect("get endpoint"),
        None,
        "a deleted endpoint is gone"
    );
    assert_eq!(
        s.delete_endpoint(t, first.id, None)
            .await
            .expect("delete endpoint"),
        Written::Missing,
        "deleting a deleted endpoint reports it missing"
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
    stored_endpoint(s, &e).await;

    assert_eq!(
        s.get_endpoint(other, e.id).await.expect("get endpoint"),
        None,
        "an endpoint is not found under another tenant"
    );
    assert_eq!(
        s.delete_endpoint(other, e.id, None)
            .await
            .expect("delete endpoint"),
        Written::Missing,
        "another tenant cannot delete an endpoint"
    );
    let theirs = Endpoint {
        tenant: other,
        url: "https://hooks.example.com/taken".into(),
        ..e.clone()
    };
    assert_eq!(
        s.update_endpoint(&theirs, 1)
            .await
            .expect("update endpoint"),
        Written::Missing,
        "another tenant cannot update an endpoint"
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
        "refused writes leave the endpoint"
    );
}

/// Every write of an endpoint made from a copy is conditional on the version the copy
/// was read at: a change made since (an edit, a health change) is never undone, and a
/// deleted endpoint never comes back.
async fn endpoint_writes_are_conditional_on_the_version(s: &dyn Store) {
    let t0 = now();
    let t = TenantId::new();
    let e = endpoint(t, None, t0);
    stored_endpoint(s, &e).await;
    let get = || async { s.get_endpoint(t, e.id).await.expect("get").expect("stored") };

    let renamed = Endpoint {
        description: "renamed".into(),
        ..e.clone()
    };
    assert_eq!(
        s.update_endpoint(&renamed, 1).await.expect("update"),
        Written::Done
    );
    let stale = Endpoint {
        url: "https://hooks.example.com/stale".into(),
        ..e.clone()
    };
    assert_eq!(
        s.update_endpoint(&stale, 1).await.expect("update"),
        Written::Stale,
        "an update from a copy older than the stored version is refused"
    );
    assert_eq!(
        get().await,
        Endpoint {
            version: 2,
            ..renamed.clone()
        },
        "a refused update stores nothing"
    );

    // The worker's health changes move the version on too: an edit made from a copy
    // read before one cannot undo it.
    assert!(s
        .update_endpoint_health(
            t,
            e.id,
            &HealthChange::Disable {
                reason: "gone".into(),
                at: t0 + 5
            }
        )
        .await
        .expect("disable"));
    let disabled = get().await;
    assert_eq!(
        (disabled.version, disabled.status),
        (3, EndpointStatus::Disabled),
        "a health change moves the version on"
    );
    let from_before = Endpoint {
        description: "edited from an old copy".into(),
        ..renamed.clone()
    };
    assert_eq!(
        s.update_endpoint(&from_before, 2).await.expect("update"),
        Written::Stale,
        "an edit from a copy read before the health change is refused"
    );
    assert_eq!(get().await.status, EndpointStatus::Disabled);
    assert!(s
        .update_endpoint_health(t, e.id, &HealthChange::Failing { at: t0 + 6 })
        .await
        .expect("failing"));
    assert!(s
        .update_endpoint_health(t, e.id, &HealthChange::Recovered)
        .await
        .expect("recovered"));
    assert_eq!(
        get().await.version,
        5,
        "each health change moves the version"
    );

    assert_eq!(
        s.delete_endpoint(t, e.id, Some(4)).await.expect("delete"),
        Written::Stale,
        "a delete at an old version is refused"
    );
    assert_eq!(
        s.delete_endpoint(t, e.id, Some(5)).await.expect("delete"),
        Written::Done,
        "a delete at the current version is made"
    );
    assert_eq!(
        s.update_endpoint(&renamed, 5).await.expect("update"),
        Written::Missing,
        "an update of a deleted endpoint does not bring it back"
    );
    assert_eq!(s.get_endpoint(t, e.id).await.expect("get"), None);
    assert_eq!(
        s.delete_endpoint(t, e.id, Some(5)).await.expect("delete"),
        Written::Missing
    );
}

/// Two writers that read the same version: exactly one of them writes.
async fn of_two_concurrent_updates_one_is_refused(s: &dyn Store, traits: StoreTraits) {
    let t = TenantId::new();
    let e = endpoint(t, None, now());
    stored_endpoint(s, &e).await;
    let a = Endpoint {
        description: "a".into(),
        ..e.clone()
    };
    let b = Endpoint {
        url: "https://hooks.example.com/b".into(),
        ..e.clone()
    };
    let updates = together(
        traits,
        vec![s.update_endpoint(&a, 1), s.update_endpoint(&b, 1)],
    )
    .await;
    let mut results = [
        updates[0].as_ref().copied().expect("update a"),
        updates[1].as_ref().copied().expect("update b"),
    ];
    results.sort_by_key(|w| *w == Written::Done);
    assert_eq!(results, [Written::Stale, Written::Done]);
    let stored = s.get_endpoint(t, e.id).await.expect("get").expect("stored");
    assert_eq!(stored.version, 2);
    assert!(
        stored == Endpoint { version: 2, ..a } || stored == Endpoint { version: 2, ..b },
        "the stored endpoint is one writer's whole copy, not a mix"
    );
}

async fn the_endpoint_limit_holds_under_concurrent_creates(s: &dyn Store, traits: StoreTraits) {
    let t = TenantId::new();
    let t0 = now();
    let max = 4;
    let candidates: Vec<Endpoint> = (0..10).map(|i| endpoint(t, None, t0 + i)).collect();
    let results = together(
        traits,
        candidates
            .iter()
            .map(|e| s.create_endpoint(e, max))
            .collect(),
    )
    .await;
    let mut created = 0;
    for r in results {
        match r {
            Ok(()) => created += 1,
            Err(Error::Conflict { code, .. }) => assert_eq!(code, "too_many_endpoints"),
            Err(other) => {
                panic!("a create over the limit must be too_many_endpoints, got {other:?}")
            }
        }
    }
    assert_eq!(
        created, max,
        "exactly the limit's worth of endpoints is created"
    );
    let listed = s.list_endpoints(t).await.expect("list");
    assert_eq!(listed.len(), max, "refused creates store nothing");

    assert_eq!(
        s.delete_endpoint(t, listed[0].id, None)
            .await
            .expect("delete"),
        Written::Done
    );
    s.create_endpoint(&endpoint(t, None, t0 + 20), max)
        .await
        .expect("a delete makes room for one more");
    assert!(
        s.create_endpoint(&endpoint(t, None, t0 + 21), max)
            .await
            .is_err(),
        "and only one"
    );
    s.create_endpoint(&endpoint(TenantId::new(), None, t0), max)
        .await
        .expect("the limit is per tenant");
}

/// A group of endpoints (the URLs of a Mailgun webhook) changes as one: conditional on
/// the group's version and on each removed endpoint's, all or nothing.
async fn endpoint_groups_change_as_one(s: &dyn Store, traits: StoreTraits) {
    let t = TenantId::new();
    let t0 = now();
    let group = "mg.example.com#delivered";
    assert_eq!(
        s.endpoint_group_version(t, group).await.expect("version"),
        0,
        "a group never written is at version 0"
    );
    let (a, b) = (endpoint(t, None, t0), endpoint(t, None, t0 + 1));
    let (add_a, add_b) = ([a], [b]);
    let writes = together(
        traits,
        vec![
            s.update_endpoint_group(t, group, 0, &[], &add_a, NO_LIMIT),
            s.update_endpoint_group(t, group, 0, &[], &add_b, NO_LIMIT),
        ],
    )
    .await;
    let mut results = [
        writes[0].as_ref().copied().expect("group"),
        writes[1].as_ref().copied().expect("group"),
    ];
    results.sort_by_key(|w| *w == Written::Done);
    assert_eq!(
        results,
        [Written::Stale, Written::Done],
        "of two writers from the same group version, one is refused"
    );
    let members = s.list_endpoints(t).await.expect("list");
    assert_eq!(members.len(), 1, "the refused writer stored nothing");
    assert_eq!(
        s.endpoint_group_version(t, group).await.expect("version"),
        1
    );
    let member = members[0].clone();

    // A removal of a member changed meanwhile is refused, with nothing written.
    assert!(s
        .update_endpoint_health(t, member.id, &HealthChange::Failing { at: t0 })
        .await
        .expect("failing"));
    let c = endpoint(t, None, t0 + 2);
    assert_eq!(
        s.update_endpoint_group(
            t,
            group,
            1,
            std::slice::from_ref(&member),
            std::slice::from_ref(&c),
            NO_LIMIT
        )
        .await
        .expect("group"),
        Written::Stale
    );
    assert_eq!(s.get_endpoint(t, c.id).await.expect("get"), None);
    assert_eq!(
        s.endpoint_group_version(t, group).await.expect("version"),
        1
    );

    let current = s
        .get_endpoint(t, member.id)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(
        s.update_endpoint_group(t, group, 1, &[current], std::slice::from_ref(&c), NO_LIMIT)
            .await
            .expect("group"),
        Written::Done
    );
    assert_eq!(
        s.list_endpoints(t).await.expect("list"),
        vec![c.clone()],
        "the member is replaced"
    );
    assert_eq!(
        s.endpoint_group_version(t, group).await.expect("version"),
        2
    );

    // Over the tenant's limit: refused as a create is, and nothing written.
    let more: Vec<Endpoint> = (0..3).map(|i| endpoint(t, None, t0 + 10 + i)).collect();
    match s.update_endpoint_group(t, group, 2, &[], &more, 2).await {
        Err(Error::Conflict { code, .. }) => assert_eq!(code, "too_many_endpoints"),
        other => panic!("a group over the limit must be too_many_endpoints, got {other:?}"),
    }
    assert_eq!(s.list_endpoints(t).await.expect("list"), vec![c]);
    assert_eq!(
        s.endpoint_group_version(t, group).await.expect("version"),
        2
    );
    assert_eq!(
        s.endpoint_group_version(TenantId::new(), group)
            .await
            .expect("version"),
        0,
        "groups are per tenant"
    );
}

/// Endpoints page in id order with no item twice and none left out, whatever the page
/// size, and another tenant's never show.
async fn listings_page_in_key_order(s: &dyn Store) {
    let t = TenantId::new();
    let t0 = now();
    let mut all = Vec::new();
    for i in 0..23 {
        let e = endpoint(t, None, t0 + i);
        stored_endpoint(s, &e).await;
        all.push(e);
    }
    stored_endpoint(s, &endpoint(TenantId::new(), None, t0)).await;
    all.sort_by_key(|e| e.id);
    for limit in [1, 5, 10, 23, 100] {
        let (listed, pages) =
            every_page(limit, |q| async move { s.list_endpoints_page(t, &q).await }).await;
        assert_eq!(
            listed, all,
            "pages of {limit} list every endpoint once, by id"
        );
        assert_eq!(pages, 23_usize.div_ceil(limit), "no empty page at the end");
    }
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

/// The messages of a page of `n`, of types `a` and `b` in turn, each with two targets.
fn page_of(t: TenantId, n: usize) -> Vec<Message> {
    MessageId::page(n)
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let kind = if i % 2 == 0 { "a" } else { "b" };
            let mut m = message(id, t, kind, &format!(r#"{{"n":{i},"kind":"{kind}"}}"#));
            m.targets = vec![EndpointId::new(), EndpointId::new()];
            m
        })
        .collect()
}

async fn a_page_is_stored_once_and_its_messages_read_as_any(s: &dyn Store) {
    let t0 = now();
    let t = TenantId::new();
    // Ids a second before and after the page's, which is minted now.
    let before = message(message_id_at(t0 - 1_000), t, "a", "{}");
    s.insert_message(&before).await.expect("insert message");
    let page = page_of(t, 10);
    let after = message(message_id_at(t0 + 1_000), t, "b", "{}");

    let stored = s
        .insert_page_leased(&page, t0, t0 + LEASE_MS)
        .await
        .expect("insert page");
    s.insert_message(&after).await.expect("insert message");
    assert_eq!(stored.len(), page.len(), "one answer per message");
    for (got, want) in stored.iter().zip(&page) {
        assert_same_message(&got.message, want, "a page's insert returns its messages");
    }
    let leased = stored[0].first_attempts;
    assert!(
        stored.iter().all(|i| i.first_attempts == leased),
        "a page's messages share its lease"
    );
    assert_ne!(leased, FirstAttempts::HeldUntil(t0 + LEASE_MS));

    // Another copy of the page: the stored version, and the lease only once.
    let mut changed = page.clone();
    changed[3].event_type = "changed".into();
    let again = s
        .insert_page_leased(&changed, t0 + 1, t0 + 1 + LEASE_MS)
        .await
        .expect("insert page");
    let later = t0 + LEASE_MS;
    let ended = s
        .insert_page_leased(&changed, later, later + LEASE_MS)
        .await
        .expect("insert page");
    for (got, want) in again.iter().zip(&page) {
        assert_same_message(
            &got.message,
            want,
            "a second insert returns the first version",
        );
    }
    if leased == FirstAttempts::Leased {
        assert!(again
            .iter()
            .all(|i| i.first_attempts == FirstAttempts::HeldUntil(t0 + LEASE_MS)));
        assert!(ended
            .iter()
            .all(|i| i.first_attempts == FirstAttempts::Open));
    } else {
        assert!(again
            .iter()
            .all(|i| i.first_attempts == FirstAttempts::Open));
    }

    // Each message is found by its id, under its tenant only.
    for want in &page {
        let got = s.get_message(t, want.id).await.expect("get message");
        assert_same_message(&got.expect("a page's message is found"), want, "get");
        let other = s.get_message(TenantId::new(), want.id).await.expect("get");
        assert!(
            other.is_none(),
            "another tenant does not find a page's message"
        );
    }
    let unknown = MessageId::from_ulid(ulid::Ulid(page[9].id.ulid().0 + 1));
    assert!(s.get_message(t, unknown).await.expect("get").is_none());

    // Listed newest first among the others, with cursors falling inside the page, and
    // filtered by type message by message.
    let mut want: Vec<MessageId> = page.iter().rev().map(|m| m.id).collect();
    want.insert(0, after.id);
    want.push(before.id);
    for limit in [1, 3, 4, 20] {
        let (ids, _) = all_pages(s, t, limit, None).await;
        assert_eq!(ids, want, "pages of {limit}");
    }
    let of_b: Vec<MessageId> = want
        .iter()
        .copied()
        .filter(|id| *id == after.id || page.iter().any(|m| m.id == *id && m.event_type == "b"))
        .collect();
    for limit in [2, 20] {
        let (ids, _) = all_pages(s, t, limit, Some("b")).await;
        assert_eq!(ids, of_b, "type b in pages of {limit}");
    }
}

async fn a_pages_first_answers_read_as_recorded_attempts(s: &dyn Store) {
    let t0 = now();
    let t = TenantId::new();
    let page = page_of(t, 4);
    s.insert_page_leased(&page, t0, t0 + LEASE_MS)
        .await
        .expect("insert page");
    // The first target of messages 0 and 2 answered 200; message 2's second target
    // failed and is recorded on its own, as a retry builds on it.
    let succeeded = |m: &Message, ep: EndpointId| {
        let d = Delivery {
            status: DeliveryStatus::Succeeded,
            attempts: 1,
            last_status_code: Some(200),
            updated_at: t0 + 7,
            ..Delivery::fresh(m.id, ep, t, t0)
        };
        let a = attempt(&d, 1, t0 + 5, 200, AttemptOutcome::Succeeded);
        (d, a)
    };
    let firsts = vec![
        succeeded(&page[0], page[0].targets[0]),
        succeeded(&page[2], page[2].targets[0]),
    ];
    let failed = Delivery {
        attempts: 1,
        next_attempt_at: Some(t0 + 60_000),
        last_status_code: Some(503),
        updated_at: t0 + 8,
        ..Delivery::fresh(page[2].id, page[2].targets[1], t, t0)
    };
    let failed_attempt = attempt(&failed, 1, t0 + 6, 503, AttemptOutcome::Retrying);
    assert!(s
        .record_attempt(&failed, 0, Some(&failed_attempt))
        .await
        .expect("record attempt"));
    s.record_page_firsts(&firsts).await.expect("record firsts");

    for (d, a) in &firsts {
        let got = s
            .get_delivery(d.message, d.endpoint)
            .await
            .expect("get delivery")
            .expect("a first answer is a delivery");
        assert_eq!(got.status, DeliveryStatus::Succeeded);
        assert_eq!(got.attempts, 1);
        assert_eq!(got.last_status_code, Some(200));
        assert_eq!(got.tenant, t);
        let listed = s.list_deliveries(d.message).await.expect("list deliveries");
        assert!(listed
            .iter()
            .any(|l| l.endpoint == d.endpoint && l.status == DeliveryStatus::Succeeded));
        let attempts = s.list_attempts(t, d.message).await.expect("list attempts");
        let mine: Vec<_> = attempts
            .iter()
            .filter(|x| x.endpoint == d.endpoint)
            .collect();
        assert_eq!(mine.len(), 1, "the first attempt once");
        assert_eq!(mine[0].id, a.id);
        assert_eq!(mine[0].number, 1);
        assert_eq!(mine[0].status_code, Some(200));
        assert_eq!(mine[0].response, a.response);
        assert_eq!(mine[0].outcome, AttemptOutcome::Succeeded);
        assert!(
            s.list_attempts(TenantId::new(), d.message)
                .await
                .expect("list attempts")
                .is_empty(),
            "another tenant sees no attempt"
        );
        // Settled: a copy of the event coming after the lease claims nothing.
        let claim = Delivery::fresh(d.message, d.endpoint, t, t0 + LEASE_MS);
        let claimed = s
            .claim_delivery(&claim, 0, t0 + LEASE_MS, t0 + 2 * LEASE_MS)
            .await
            .expect("claim");
        assert!(!claimed, "a recorded first attempt is not claimed again");
    }
    // Message 2: its failure beside its first answer, both listed.
    let listed = s
        .list_deliveries(page[2].id)
        .await
        .expect("list deliveries");
    assert_eq!(listed.len(), 2, "{listed:?}");
    let attempts = s.list_attempts(t, page[2].id).await.expect("list attempts");
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].id, firsts[1].1.id, "oldest first");
    assert_eq!(attempts[1].id, failed_attempt.id);
    // Messages without answers have no deliveries, and their targets may be claimed.
    assert!(s
        .list_deliveries(page[1].id)
        .await
        .expect("list")
        .is_empty());
    assert!(s
        .get_delivery(page[0].id, page[0].targets[1])
        .await
        .expect("get delivery")
        .is_none());
    let open = Delivery::fresh(page[3].id, page[3].targets[0], t, t0);
    assert!(s
        .claim_delivery(&open, 0, t0, t0 + LEASE_MS)
        .await
        .expect("claim"));
}

/// A tenant's messages share storage with its endpoints, keys, domains and idempotency
/// keys in some stores; listings and lookups must keep to the messages.
async fn messages_are_listed_apart_from_the_tenants_other_records(s: &dyn Store) {
    let (t, _) = stored_tenant(s, None).await;
    let at = now();
    s.create_domain(&domain(t, "shop.example.com", at))
        .await
        .expect("create domain");
    stored_endpoint(s, &endpoint(t, None, at)).await;
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

/// Enough messages to fall on most of a sharded store's partition keys, paged in small
/// pages: the merge of the shards must keep every message once, newest first, and a
/// cursor taken from any page must continue exactly after it.
async fn list_messages_pages_through_a_large_log(s: &dyn Store) {
    let t = TenantId::new();
    let types: Vec<&str> = (0..80)
        .map(|i| if i % 3 == 0 { "opened" } else { "delivered" })
        .collect();
    let newest_first = insert_messages(s, t, &types).await;
    let want: Vec<_> = newest_first.iter().map(|m| m.id).collect();

    let (ids, first_page) = all_pages(s, t, 10, None).await;
    assert_eq!(
        first_page,
        want[..10],
        "the first page holds the newest ten"
    );
    assert_eq!(ids, want, "pages list all 80 once, newest first");

    let (opened, _) = all_pages(s, t, 9, Some("opened")).await;
    let want_opened: Vec<_> = newest_first
        .iter()
        .filter(|m| m.event_type == "opened")
        .map(|m| m.id)
        .collect();
    assert_eq!(opened, want_opened, "filtered pages list every match once");

    let middle = s
        .list_messages(
            t,
            &MessageQuery {
                before: Some(want[41]),
                limit: 5,
                event_type: None,
            },
        )
        .await
        .expect("list messages");
    assert_eq!(
        middle.items.iter().map(|m| m.id).collect::<Vec<_>>(),
        want[42..47],
        "a cursor in the middle continues right after it"
    );
    assert_eq!(middle.next_cursor, Some(want[46].to_string()));
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
    stored_endpoint(s, &e).await;
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
            version: 2,
            ..e.clone()
        },
        "only failing_since (and the version) changed"
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
        version: 3,
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
            version: 4,
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

    let (listed, _) = every_page(7, |q| async move { s.list_event_types(&q).await }).await;
    assert!(
        listed.windows(2).all(|w| w[0].name < w[1].name),
        "types are listed sorted by name, each once, across pages"
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

async fn portal_login_tokens_are_single_use_and_expire(s: &dyn Store) {
    let tenant = TenantId::new();
    let now: Millis = 1_700_000_000_000;
    let live = KeyHash::of(&format!("token-{}", Ulid::new()));
    s.insert_login_token(&live, tenant, now + 600_000)
        .await
        .expect("insert token");
    assert_eq!(
        s.take_login_token(&KeyHash::of("never issued"), now)
            .await
            .expect("take unknown"),
        None,
        "an unknown token opens nothing"
    );
    assert_eq!(
        s.take_login_token(&live, now).await.expect("take"),
        Some(tenant),
        "a live token gives its tenant"
    );
    assert_eq!(
        s.take_login_token(&live, now).await.expect("take again"),
        None,
        "a token is used once"
    );

    let expired = KeyHash::of(&format!("token-{}", Ulid::new()));
    s.insert_login_token(&expired, tenant, now + 1_000)
        .await
        .expect("insert token");
    assert_eq!(
        s.take_login_token(&expired, now + 1_000)
            .await
            .expect("take expired"),
        None,
        "a token is refused from its expiry on"
    );

    let raced = KeyHash::of(&format!("token-{}", Ulid::new()));
    s.insert_login_token(&raced, tenant, now + 600_000)
        .await
        .expect("insert token");
    let (a, b) = tokio::join!(
        s.take_login_token(&raced, now),
        s.take_login_token(&raced, now)
    );
    let taken = [a.expect("take a"), b.expect("take b")];
    assert_eq!(
        taken.iter().filter(|t| t.is_some()).count(),
        1,
        "of two concurrent uses of a token one succeeds: {taken:?}"
    );
}

async fn portal_sessions_expire_and_end(s: &dyn Store) {
    let now: Millis = 1_700_000_000_000;
    let hash = KeyHash::of(&format!("session-{}", Ulid::new()));
    let session = PortalSession {
        tenant: TenantId::new(),
        csrf: format!("csrf-{}", Ulid::new()),
        created_at: now,
        expires_at: now + 3_600_000,
    };
    s.insert_portal_session(&hash, &session)
        .await
        .expect("insert session");
    assert_eq!(
        s.get_portal_session(&hash, now + 1).await.expect("get"),
        Some(session.clone()),
        "a live session reads back as stored"
    );
    assert_eq!(
        s.get_portal_session(&hash, session.expires_at)
            .await
            .expect("get expired"),
        None,
        "a session is gone from its expiry on"
    );
    assert_eq!(
        s.get_portal_session(&KeyHash::of("never issued"), now)
            .await
            .expect("get unknown"),
        None
    );
    s.delete_portal_session(&hash).await.expect("end session");
    assert_eq!(
        s.get_portal_session(&hash, now + 1)
            .await
            .expect("get ended"),
        None,
        "an ended session is gone"
    );
    s.delete_portal_session(&hash)
        .await
        .expect("ending an ended session is no error");
}

// ---- the operator tenant ----------------------------------------------------------------

/// The operator's endpoints live under the reserved operator tenant like any tenant's:
/// stored, read, listed and paged there, and never seen from another tenant. Runs share
/// that one tenant, so the check looks only at its own records and deletes them after.
async fn the_operator_tenant_holds_endpoints_and_messages(s: &dyn Store) {
    let (other, _) = stored_tenant(s, None).await;
    let mine: Vec<Endpoint> = (0..3)
        .map(|i| {
            endpoint_to(
                OPERATOR_TENANT,
                &format!("https://ops{i}.example.com/"),
                None,
            )
        })
        .collect();
    for e in &mine {
        stored_endpoint(s, e).await;
    }
    let read = s
        .get_endpoint(OPERATOR_TENANT, mine[0].id)
        .await
        .expect("get")
        .expect("an operator endpoint is stored");
    assert_eq!(read.url, mine[0].url);
    assert!(
        s.get_endpoint(other, mine[0].id)
            .await
            .expect("get")
            .is_none(),
        "another tenant does not see the operator's endpoints"
    );
    let all = s.list_endpoints(OPERATOR_TENANT).await.expect("list");
    assert!(mine.iter().all(|e| all.iter().any(|a| a.id == e.id)));
    assert!(s.list_endpoints(other).await.expect("list").is_empty());
    let (paged, _) = every_page(2, |p| async move {
        s.list_endpoints_page(OPERATOR_TENANT, &p).await
    })
    .await;
    assert!(mine.iter().all(|e| paged.iter().any(|a| a.id == e.id)));

    let m = Message {
        targets: vec![mine[0].id],
        ..message(
            MessageId::new(),
            OPERATOR_TENANT,
            "hookline.endpoint.disabled",
            "{}",
        )
    };
    s.insert_message(&m).await.expect("insert");
    assert!(s
        .get_message(OPERATOR_TENANT, m.id)
        .await
        .expect("get")
        .is_some());
    assert!(s.get_message(other, m.id).await.expect("get").is_none());

    for e in &mine {
        assert_eq!(
            s.delete_endpoint(OPERATOR_TENANT, e.id, None)
                .await
                .expect("delete"),
            Written::Done
        );
    }
}

// ---- dead letters -----------------------------------------------------------------------

/// Dead-letters `n` new messages of the queue with reasons `reason-0`, `reason-1`, …;
/// returns their bodies.
async fn dead_lettered(q: &dyn PullQueue, tag: &str, n: usize) -> Vec<String> {
    let bodies: Vec<String> = (0..n).map(|i| body(&format!("{tag}{i}"))).collect();
    for (i, b) in bodies.iter().enumerate() {
        q.send(vec![outgoing(b, Duration::ZERO)])
            .await
            .expect("send");
        let r = only(receive_some(q, 10, LONG).await, b, "a sent message");
        q.dead_letter(&r.receipt, &format!("reason-{i}"))
            .await
            .expect("dead-letter");
    }
    bodies
}

/// The dead letters whose body is one of `bodies`, from every page of the listing.
async fn own_letters(d: &dyn DeadLetters, bodies: &[String]) -> Vec<crate::ports::DeadLetter> {
    let (all, _) = every_page(2, |p| async move { d.list_dead_letters(&p).await }).await;
    let ids: BTreeSet<&str> = all.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "no dead letter is listed twice");
    all.into_iter()
        .filter(|l| bodies.contains(&l.body))
        .collect()
}

async fn dead_letters_are_listed_with_their_reason_in_pages(
    q: &dyn PullQueue,
    d: &dyn DeadLetters,
) {
    let bodies = dead_lettered(q, "listed", 3).await;
    let letters = own_letters(d, &bodies).await;
    assert_eq!(letters.len(), 3, "each dead letter once: {letters:?}");
    for (i, b) in bodies.iter().enumerate() {
        let l = letters.iter().find(|l| &l.body == b).expect("listed");
        assert_eq!(l.reason, format!("reason-{i}"));
        assert!(l.at > 0, "a dead letter has a time");
    }
    // Listing takes nothing away: a second listing sees them all again.
    assert_eq!(own_letters(d, &bodies).await.len(), 3);
    match d
        .list_dead_letters(&PageQuery {
            after: Some("not a cursor".into()),
            limit: 2,
        })
        .await
    {
        Err(Error::Invalid { code, .. }) => assert_eq!(code, "invalid_cursor"),
        other => panic!("a bad cursor must be invalid_cursor, got {other:?}"),
    }
    // Leave nothing behind for the other checks.
    let ids: Vec<String> = letters.iter().map(|l| l.id.clone()).collect();
    assert_eq!(d.redrive(Some(&ids)).await.expect("redrive").len(), 3);
    drain(q, &bodies).await;
}

async fn a_redrive_sends_the_chosen_dead_letters_back_as_new_messages(
    q: &dyn PullQueue,
    d: &dyn DeadLetters,
) {
    let bodies = dead_lettered(q, "redrive", 2).await;
    let letters = own_letters(d, &bodies).await;
    let first = letters
        .iter()
        .find(|l| l.body == bodies[0])
        .expect("listed")
        .clone();
    let chosen = vec![first.id.clone(), "no-such-dead-letter".to_string()];
    assert_eq!(
        d.redrive(Some(&chosen)).await.expect("redrive"),
        vec![first.id.clone()],
        "only dead letters that exist are redriven"
    );
    let r = only(
        receive_some(q, 10, LONG).await,
        &bodies[0],
        "a redriven message is on the queue again",
    );
    assert_eq!(
        r.receive_count, 1,
        "as a new message, its receives counted afresh"
    );
    q.ack(&[r.receipt]).await.expect("ack");
    let left = own_letters(d, &bodies).await;
    assert_eq!(left.len(), 1, "the other one stays: {left:?}");
    assert_eq!(left[0].body, bodies[1]);
    // Again: a redriven message is gone from the dead letters.
    assert!(d
        .redrive(Some(std::slice::from_ref(&first.id)))
        .await
        .expect("redrive")
        .is_empty());
    let ids = vec![left[0].id.clone()];
    assert_eq!(d.redrive(Some(&ids)).await.expect("redrive"), ids);
    drain(q, &bodies[1..]).await;
    assert!(own_letters(d, &bodies).await.is_empty());
}

/// Receives and acks the messages with `bodies`, which must be on the queue.
async fn drain(q: &dyn PullQueue, bodies: &[String]) {
    let mut left: BTreeSet<&String> = bodies.iter().collect();
    let deadline = Instant::now() + PATIENCE;
    while !left.is_empty() {
        assert!(Instant::now() < deadline, "never came back: {left:?}");
        for r in receive_some(q, 10, LONG).await {
            assert!(left.remove(&r.body), "unexpected message {r:?}");
            q.ack(&[r.receipt]).await.expect("ack");
        }
    }
}
