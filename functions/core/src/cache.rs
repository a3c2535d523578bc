//! A store wrapper for warm Lambda functions: what a burst of requests or events reads
//! over and over is read once and reused for a few seconds. Each cache is switched on for
//! the function that gains from it; everything else passes straight through.
//!
//! - **Endpoints** (the deliver function): a tenant's endpoints are read once per
//!   lifetime, and concurrent misses wait for the one query in flight rather than making
//!   their own. A delivery takes its endpoint from that list too, so an endpoint changed
//!   through the API (deleted, disabled, its URL or secret) is seen within the cache's
//!   lifetime rather than at once.
//! - **API keys** (the ingest function): the key a request carries is looked up once and
//!   its record reused. A revoked key keeps publishing through a warm function for up to
//!   that long after the revocation (the api function revokes, and cannot tell the ingest
//!   functions). Unknown keys are not remembered: a key is usable as soon as it is created.
//!
//! Every change made through the wrapper forgets what it changes before and after it is
//! stored, reads made while such a change is under way go to the store (nothing cached is
//! used or kept), and a read that was under way when a change began is not kept. So where
//! every write goes through one wrapper, as in local mode (one process owns the file; its
//! API, publishing and worker share the wrapper), a read that starts after a change is
//! stored sees it, which read-decide-write protocols (the Mailgun facade's webhook groups)
//! rely on, and the caches only save the reads: a publish no longer asks the database for
//! its key and whether the tenant has ordered endpoints, nor a fan-out for the endpoints.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::ids::{ApiKeyId, EndpointId, MessageId, TenantId};
use crate::keys::KeyHash;
use crate::model::{
    ApiKeyRecord, Attempt, CustomEventType, Delivery, Domain, Endpoint, EndpointStatus,
    FailedQuery, HealthChange, Message, MessageQuery, Millis, Page, PageQuery, PortalSession,
    Tenant,
};
use crate::ports::{
    DeliveryStore, EndpointStore, EventTypeStore, Inserted, MessageStore, PortalStore, SharedStore,
    TenantStore, Written,
};
use crate::Result;

/// At most this many API keys are remembered; when full, the key cache starts over.
const MAX_KEYS: usize = 10_000;

/// Counts a change under way for as long as it lives (a dropped request included).
struct Changing<'a>(&'a AtomicUsize);

impl<'a> Changing<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, AtomicOrdering::SeqCst);
        Changing(count)
    }
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, AtomicOrdering::SeqCst);
    }
}

/// A value and when it was fetched; `None` until the first fetch succeeds.
type Slot<V> = Arc<tokio::sync::Mutex<Option<(Instant, V)>>>;

/// Values by key, reused for `ttl`, each fetched by one caller at a time: the others wait
/// for its result instead of fetching too.
struct Memo<K, V> {
    ttl: Duration,
    slots: Mutex<HashMap<K, Slot<V>>>,
}

impl<K: Eq + Hash, V: Clone> Memo<K, V> {
    fn new(ttl: Duration) -> Self {
        Memo {
            ttl,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The value of `key`, fetched with `fetch` unless a fresh one is at hand.
    async fn get<F, Fut>(&self, key: K, fetch: F) -> Result<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V>>,
    {
        let slot = self.lock().entry(key).or_default().clone();
        let mut cached = slot.lock().await;
        if let Some((at, value)) = cached.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(value.clone());
            }
        }
        let value = fetch().await?;
        *cached = Some((Instant::now(), value.clone()));
        Ok(value)
    }

    /// Drops the key's value. A fetch in flight finishes into the dropped slot, so what it
    /// read (perhaps before the change that made the caller forget) is not reused.
    fn forget(&self, key: &K) {
        self.lock().remove(key);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Slot<V>>> {
        // A poisoned cache is still a valid cache.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Found API keys by hash, each reused for `ttl`. Bounded, since the hashes come from
/// requests; a key not found is never kept.
struct KeyCache {
    ttl: Duration,
    keys: Mutex<HashMap<KeyHash, (Instant, ApiKeyRecord)>>,
    /// Raised by every revocation: a lookup that began before one does not keep what it
    /// read, which may predate the revocation.
    revocations: AtomicU64,
    /// Revocations under way: lookups meanwhile go to the store.
    revoking: AtomicUsize,
}

impl KeyCache {
    fn new(ttl: Duration) -> Self {
        KeyCache {
            ttl,
            keys: Mutex::new(HashMap::new()),
            revocations: AtomicU64::new(0),
            revoking: AtomicUsize::new(0),
        }
    }

    fn revoking(&self) -> bool {
        self.revoking.load(AtomicOrdering::SeqCst) > 0
    }

    fn revocations(&self) -> u64 {
        self.revocations.load(AtomicOrdering::SeqCst)
    }

    fn cached(&self, hash: &KeyHash) -> Option<ApiKeyRecord> {
        self.lock()
            .get(hash)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, record)| record.clone())
    }

    /// Keeps `record`, read by a lookup that began when [`KeyCache::revocations`] was
    /// `seen`, unless a key was revoked since.
    fn remember(&self, record: &ApiKeyRecord, seen: u64) {
        let mut keys = self.lock();
        // Checked under the lock `forget` takes after raising the count.
        if self.revocations() != seen || self.revoking() {
            return;
        }
        if keys.len() >= MAX_KEYS {
            keys.clear();
        }
        keys.insert(record.hash.clone(), (Instant::now(), record.clone()));
    }

    fn forget(&self, tenant: TenantId, id: ApiKeyId) {
        self.revocations.fetch_add(1, AtomicOrdering::SeqCst);
        self.lock()
            .retain(|_, (_, record)| !(record.tenant == tenant && record.id == id));
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<KeyHash, (Instant, ApiKeyRecord)>> {
        // A poisoned cache is still a valid cache.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A [`crate::ports::Store`] with the caches the caller switched on.
pub struct CachedStore {
    inner: SharedStore,
    endpoints: Option<Memo<TenantId, Arc<Vec<Endpoint>>>>,
    /// Changes of endpoints under way (of any tenant): endpoint reads meanwhile go to the
    /// store.
    changing_endpoints: AtomicUsize,
    keys: Option<KeyCache>,
}

impl CachedStore {
    /// No cache yet: everything passes through.
    pub fn new(inner: SharedStore) -> Self {
        CachedStore {
            inner,
            endpoints: None,
            changing_endpoints: AtomicUsize::new(0),
            keys: None,
        }
    }

    /// Reuses each tenant's endpoint list for `ttl`.
    pub fn with_endpoints(mut self, ttl: Duration) -> Self {
        self.endpoints = Some(Memo::new(ttl));
        self
    }

    /// Reuses each found API key's record for `ttl`.
    pub fn with_api_keys(mut self, ttl: Duration) -> Self {
        self.keys = Some(KeyCache::new(ttl));
        self
    }

    /// The tenant's endpoints from the cache; `None` when that cache is off.
    async fn cached_endpoints(&self, tenant: TenantId) -> Result<Option<Arc<Vec<Endpoint>>>> {
        let Some(memo) = &self.endpoints else {
            return Ok(None);
        };
        if self.changing_endpoints.load(AtomicOrdering::SeqCst) > 0 {
            return Ok(Some(Arc::new(self.inner.list_endpoints(tenant).await?)));
        }
        memo.get(tenant, || async {
            Ok(Arc::new(self.inner.list_endpoints(tenant).await?))
        })
        .await
        .map(Some)
    }

    fn forget_endpoints(&self, tenant: TenantId) {
        if let Some(memo) = &self.endpoints {
            memo.forget(&tenant);
        }
    }

    /// Runs a write that changes the tenant's endpoints: forgets them before and after it
    /// (whatever the answer: a failed write may have been stored all the same), and while
    /// it runs has endpoint reads go to the store, so that one that reads after the write is
    /// stored (but before it returns) cannot be answered from before it. A read under way
    /// when the write began finishes into a forgotten slot.
    async fn changing_endpoints<T>(
        &self,
        tenant: TenantId,
        write: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let _changing = Changing::start(&self.changing_endpoints);
        self.forget_endpoints(tenant);
        let written = write.await;
        self.forget_endpoints(tenant);
        written
    }
}

#[async_trait]
impl EndpointStore for CachedStore {
    async fn create_domain(&self, domain: &Domain) -> Result<()> {
        self.inner.create_domain(domain).await
    }
    async fn get_domain(&self, tenant: TenantId, name: &str) -> Result<Option<Domain>> {
        self.inner.get_domain(tenant, name).await
    }
    async fn list_domains(&self, tenant: TenantId, page: &PageQuery) -> Result<Page<Domain>> {
        self.inner.list_domains(tenant, page).await
    }
    async fn delete_domain(
        &self,
        tenant: TenantId,
        name: &str,
        created_at: Option<Millis>,
    ) -> Result<Written> {
        self.changing_endpoints(tenant, self.inner.delete_domain(tenant, name, created_at))
            .await
    }
    async fn create_endpoint(&self, endpoint: &Endpoint, max_per_tenant: usize) -> Result<()> {
        self.changing_endpoints(
            endpoint.tenant,
            self.inner.create_endpoint(endpoint, max_per_tenant),
        )
        .await
    }
    async fn update_endpoint(&self, endpoint: &Endpoint, expected_version: u64) -> Result<Written> {
        self.changing_endpoints(
            endpoint.tenant,
            self.inner.update_endpoint(endpoint, expected_version),
        )
        .await
    }
    async fn list_endpoints_page(
        &self,
        tenant: TenantId,
        page: &PageQuery,
    ) -> Result<Page<Endpoint>> {
        self.inner.list_endpoints_page(tenant, page).await
    }
    async fn endpoint_group_version(&self, tenant: TenantId, group: &str) -> Result<u64> {
        self.inner.endpoint_group_version(tenant, group).await
    }
    async fn update_endpoint_group(
        &self,
        tenant: TenantId,
        group: &str,
        expected_version: u64,
        remove: &[Endpoint],
        add: &[Endpoint],
        max_per_tenant: usize,
    ) -> Result<Written> {
        self.changing_endpoints(
            tenant,
            self.inner.update_endpoint_group(
                tenant,
                group,
                expected_version,
                remove,
                add,
                max_per_tenant,
            ),
        )
        .await
    }
    async fn get_endpoint(&self, tenant: TenantId, id: EndpointId) -> Result<Option<Endpoint>> {
        match self.cached_endpoints(tenant).await? {
            Some(list) => Ok(list.iter().find(|e| e.id == id).cloned()),
            None => self.inner.get_endpoint(tenant, id).await,
        }
    }
    async fn list_endpoints(&self, tenant: TenantId) -> Result<Vec<Endpoint>> {
        match self.cached_endpoints(tenant).await? {
            Some(list) => Ok(list.as_ref().clone()),
            None => self.inner.list_endpoints(tenant).await,
        }
    }
    async fn has_ordered_endpoints(&self, tenant: TenantId) -> Result<bool> {
        match self.cached_endpoints(tenant).await? {
            Some(list) => Ok(list
                .iter()
                .any(|e| e.is_ordered() && e.status == EndpointStatus::Active)),
            None => self.inner.has_ordered_endpoints(tenant).await,
        }
    }
    async fn delete_endpoint(
        &self,
        tenant: TenantId,
        id: EndpointId,
        expected_version: Option<u64>,
    ) -> Result<Written> {
        self.changing_endpoints(
            tenant,
            self.inner.delete_endpoint(tenant, id, expected_version),
        )
        .await
    }
    async fn update_endpoint_health(
        &self,
        tenant: TenantId,
        id: EndpointId,
        change: &HealthChange,
    ) -> Result<bool> {
        self.changing_endpoints(
            tenant,
            self.inner.update_endpoint_health(tenant, id, change),
        )
        .await
    }
}

#[async_trait]
impl TenantStore for CachedStore {
    async fn create_tenant(&self, tenant: &Tenant, first_key: &ApiKeyRecord) -> Result<()> {
        self.inner.create_tenant(tenant, first_key).await
    }
    async fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
        self.inner.get_tenant(id).await
    }
    async fn list_sub_accounts(&self, parent: TenantId, page: &PageQuery) -> Result<Page<Tenant>> {
        self.inner.list_sub_accounts(parent, page).await
    }
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        self.inner.insert_api_key(key).await
    }
    async fn get_api_key(&self, tenant: TenantId, id: ApiKeyId) -> Result<Option<ApiKeyRecord>> {
        self.inner.get_api_key(tenant, id).await
    }
    async fn list_api_keys(
        &self,
        tenant: TenantId,
        page: &PageQuery,
    ) -> Result<Page<ApiKeyRecord>> {
        self.inner.list_api_keys(tenant, page).await
    }
    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at: Millis,
        only_if_live: bool,
    ) -> Result<Written> {
        let Some(keys) = &self.keys else {
            return self
                .inner
                .revoke_api_key(tenant, id, at, only_if_live)
                .await;
        };
        let _revoking = Changing::start(&keys.revoking);
        keys.forget(tenant, id);
        let revoked = self
            .inner
            .revoke_api_key(tenant, id, at, only_if_live)
            .await;
        // Even after a failure: the write may have been stored all the same.
        keys.forget(tenant, id);
        revoked
    }
    async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKeyRecord>> {
        let Some(keys) = &self.keys else {
            return self.inner.find_api_key(hash).await;
        };
        if keys.revoking() {
            return self.inner.find_api_key(hash).await;
        }
        if let Some(record) = keys.cached(hash) {
            return Ok(Some(record));
        }
        let seen = keys.revocations();
        let found = self.inner.find_api_key(hash).await?;
        if let Some(record) = &found {
            keys.remember(record, seen);
        }
        Ok(found)
    }
    async fn operator_key_hash(&self) -> Result<Option<KeyHash>> {
        self.inner.operator_key_hash().await
    }
    async fn init_operator_key_hash(&self, hash: &KeyHash) -> Result<bool> {
        self.inner.init_operator_key_hash(hash).await
    }
    async fn probe(&self) -> Result<()> {
        self.inner.probe().await
    }
}

#[async_trait]
impl MessageStore for CachedStore {
    async fn insert_message(&self, message: &Message) -> Result<Message> {
        self.inner.insert_message(message).await
    }
    async fn insert_message_leased(
        &self,
        message: &Message,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Inserted> {
        self.inner
            .insert_message_leased(message, now, lease_until)
            .await
    }
    async fn insert_page_leased(
        &self,
        messages: &[Message],
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<Inserted>> {
        self.inner
            .insert_page_leased(messages, now, lease_until)
            .await
    }
    async fn get_message(&self, tenant: TenantId, id: MessageId) -> Result<Option<Message>> {
        self.inner.get_message(tenant, id).await
    }
    async fn list_messages(&self, tenant: TenantId, query: &MessageQuery) -> Result<Page<Message>> {
        self.inner.list_messages(tenant, query).await
    }
    async fn claim_idempotency_key(
        &self,
        tenant: TenantId,
        key: &str,
        id: MessageId,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<MessageId>> {
        self.inner
            .claim_idempotency_key(tenant, key, id, now, ttl)
            .await
    }
}

#[async_trait]
impl EventTypeStore for CachedStore {
    async fn create_event_type(&self, def: &CustomEventType) -> Result<()> {
        self.inner.create_event_type(def).await
    }
    async fn get_event_type(&self, name: &str) -> Result<Option<CustomEventType>> {
        self.inner.get_event_type(name).await
    }
    async fn list_event_types(&self, page: &PageQuery) -> Result<Page<CustomEventType>> {
        self.inner.list_event_types(page).await
    }
}

#[async_trait]
impl PortalStore for CachedStore {
    async fn insert_login_token(
        &self,
        hash: &KeyHash,
        tenant: TenantId,
        expires_at: Millis,
    ) -> Result<()> {
        self.inner
            .insert_login_token(hash, tenant, expires_at)
            .await
    }
    async fn take_login_token(&self, hash: &KeyHash, now: Millis) -> Result<Option<TenantId>> {
        self.inner.take_login_token(hash, now).await
    }
    async fn insert_portal_session(&self, hash: &KeyHash, session: &PortalSession) -> Result<()> {
        self.inner.insert_portal_session(hash, session).await
    }
    async fn get_portal_session(
        &self,
        hash: &KeyHash,
        now: Millis,
    ) -> Result<Option<PortalSession>> {
        self.inner.get_portal_session(hash, now).await
    }
    async fn delete_portal_session(&self, hash: &KeyHash) -> Result<()> {
        self.inner.delete_portal_session(hash).await
    }
}

#[async_trait]
impl DeliveryStore for CachedStore {
    async fn get_delivery(
        &self,
        message: MessageId,
        endpoint: EndpointId,
    ) -> Result<Option<Delivery>> {
        self.inner.get_delivery(message, endpoint).await
    }
    async fn list_deliveries(&self, message: MessageId) -> Result<Vec<Delivery>> {
        self.inner.list_deliveries(message).await
    }
    async fn claim_delivery(
        &self,
        fresh: &Delivery,
        expected_attempts: u32,
        now: Millis,
        lease_until: Millis,
    ) -> Result<bool> {
        self.inner
            .claim_delivery(fresh, expected_attempts, now, lease_until)
            .await
    }
    async fn record_attempt(
        &self,
        delivery: &Delivery,
        expected_attempts: u32,
        attempt: Option<&Attempt>,
    ) -> Result<bool> {
        self.inner
            .record_attempt(delivery, expected_attempts, attempt)
            .await
    }
    fn records_page_firsts(&self) -> bool {
        self.inner.records_page_firsts()
    }
    async fn record_page_firsts(&self, firsts: &[(Delivery, Attempt)]) -> Result<()> {
        self.inner.record_page_firsts(firsts).await
    }
    async fn list_attempts(&self, tenant: TenantId, message: MessageId) -> Result<Vec<Attempt>> {
        self.inner.list_attempts(tenant, message).await
    }
    async fn list_failed_deliveries(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        query: &FailedQuery,
    ) -> Result<Vec<Delivery>> {
        self.inner
            .list_failed_deliveries(tenant, endpoint, query)
            .await
    }
    async fn reopen_delivery(
        &self,
        message: MessageId,
        endpoint: EndpointId,
        expected_attempts: u32,
        now: Millis,
    ) -> Result<bool> {
        self.inner
            .reopen_delivery(message, endpoint, expected_attempts, now)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::future::join_all;

    use super::*;

    #[tokio::test]
    async fn concurrent_misses_make_one_fetch() {
        let memo: Memo<u8, usize> = Memo::new(Duration::from_secs(3600));
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            // Still in flight while the other callers arrive.
            tokio::task::yield_now().await;
            Ok(n)
        };
        let got = join_all((0..10).map(|_| memo.get(1, fetch))).await;
        assert!(got.iter().all(|v| *v.as_ref().unwrap() == 0));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        // Another key has its own value; a forgotten one is fetched again.
        assert_eq!(memo.get(2, fetch).await.unwrap(), 1);
        memo.forget(&1);
        assert_eq!(memo.get(1, fetch).await.unwrap(), 2);
        assert_eq!(memo.get(1, fetch).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_failed_fetch_is_not_kept() {
        let memo: Memo<u8, usize> = Memo::new(Duration::from_secs(3600));
        let failed = memo
            .get(1, || async { Err(crate::Error::backend("fetch", "down")) })
            .await;
        assert!(failed.is_err());
        assert_eq!(memo.get(1, || async { Ok(7) }).await.unwrap(), 7);
    }

    #[test]
    fn a_lookup_under_way_during_a_revocation_is_not_kept() {
        let keys = KeyCache::new(Duration::from_secs(3600));
        let plain = crate::keys::PlainKey::generate_tenant();
        let record = ApiKeyRecord {
            id: ApiKeyId::new(),
            tenant: TenantId::new(),
            hash: plain.hash(),
            prefix: plain.shown_prefix(),
            created_at: 1,
            revoked_at: None,
        };
        // The lookup began, then another key (any key) was revoked before it finished:
        // what it read may predate the revocation, so it is used once and not kept.
        let seen = keys.revocations();
        keys.forget(TenantId::new(), ApiKeyId::new());
        keys.remember(&record, seen);
        assert!(keys.cached(&plain.hash()).is_none());
        // A lookup with no revocation under way is kept.
        keys.remember(&record, keys.revocations());
        assert_eq!(keys.cached(&plain.hash()).unwrap().id, record.id);
        // Revoking it forgets it.
        keys.forget(record.tenant, record.id);
        assert!(keys.cached(&plain.hash()).is_none());
    }

    /// The caches on a real store.
    #[cfg(all(feature = "embedded", feature = "contract"))]
    mod stores {
        use crate::contract::stored_tenant;
        use crate::keys::PlainKey;

        use super::super::*;

        fn endpoint(tenant: TenantId) -> Endpoint {
            crate::contract::endpoint_to(tenant, "https://example.com/", None)
        }

        #[tokio::test]
        async fn endpoints_are_cached_for_the_ttl_and_forgotten_on_change() {
            let (sqlite, _) = crate::embedded::open_in_memory().unwrap();
            let cached = CachedStore::new(sqlite.clone()).with_endpoints(Duration::from_secs(3600));
            let tenant = TenantId::new();
            let first = endpoint(tenant);
            cached.create_endpoint(&first, 100).await.unwrap();
            assert_eq!(cached.list_endpoints(tenant).await.unwrap().len(), 1);

            // Written behind the cache's back: not seen until the entry expires.
            sqlite
                .create_endpoint(&endpoint(tenant), 100)
                .await
                .unwrap();
            assert_eq!(cached.list_endpoints(tenant).await.unwrap().len(), 1);
            assert!(cached
                .get_endpoint(tenant, first.id)
                .await
                .unwrap()
                .is_some());

            // Written through the cache: seen at once.
            cached
                .create_endpoint(&endpoint(tenant), 100)
                .await
                .unwrap();
            assert_eq!(cached.list_endpoints(tenant).await.unwrap().len(), 3);
            cached
                .delete_endpoint(tenant, first.id, None)
                .await
                .unwrap();
            assert!(cached
                .get_endpoint(tenant, first.id)
                .await
                .unwrap()
                .is_none());

            let short = CachedStore::new(sqlite.clone()).with_endpoints(Duration::ZERO);
            sqlite
                .create_endpoint(&endpoint(tenant), 100)
                .await
                .unwrap();
            assert_eq!(short.list_endpoints(tenant).await.unwrap().len(), 3);
        }
        #[tokio::test]
        async fn found_keys_are_reused_for_the_ttl_and_unknown_ones_never() {
            let (sqlite, _) = crate::embedded::open_in_memory().unwrap();
            let cached = CachedStore::new(sqlite.clone()).with_api_keys(Duration::from_secs(3600));
            let (tenant, plain) = stored_tenant(sqlite.as_ref(), None).await;
            let record = cached.find_api_key(&plain.hash()).await.unwrap().unwrap();
            assert_eq!(record.tenant, tenant);

            // Revoked behind the cache's back (by the api function): the record in hand is
            // reused until it expires.
            sqlite
                .revoke_api_key(tenant, record.id, 5, false)
                .await
                .unwrap();
            let reused = cached.find_api_key(&plain.hash()).await.unwrap().unwrap();
            assert_eq!(reused.revoked_at, None);
            let short = CachedStore::new(sqlite.clone()).with_api_keys(Duration::ZERO);
            let fresh = short.find_api_key(&plain.hash()).await.unwrap().unwrap();
            assert_eq!(fresh.revoked_at, Some(5));

            // Revoked through the cache: seen at once.
            let (other, other_plain) = stored_tenant(sqlite.as_ref(), None).await;
            let other_key = cached
                .find_api_key(&other_plain.hash())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                cached
                    .revoke_api_key(other, other_key.id, 7, true)
                    .await
                    .unwrap(),
                Written::Done
            );
            let seen = cached
                .find_api_key(&other_plain.hash())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(seen.revoked_at, Some(7));

            // A key not found is looked up again next time, so a new key works at once.
            let later = PlainKey::generate_tenant();
            assert!(cached.find_api_key(&later.hash()).await.unwrap().is_none());
            let record = ApiKeyRecord {
                id: ApiKeyId::new(),
                tenant,
                hash: later.hash(),
                prefix: later.shown_prefix(),
                created_at: 9,
                revoked_at: None,
            };
            sqlite.insert_api_key(&record).await.unwrap();
            assert!(cached.find_api_key(&later.hash()).await.unwrap().is_some());
        }

        /// A read made while a change is under way, after its write is stored but before it
        /// returns (when the cache has not been told yet), goes to the store: a
        /// read-decide-write protocol that reads a group's version after the write and then
        /// the endpoints sees both changed (the Mailgun facade's webhook creates).
        #[tokio::test]
        async fn reads_while_a_change_is_under_way_go_to_the_store() {
            let (sqlite, _) = crate::embedded::open_in_memory().unwrap();
            let cached = CachedStore::new(sqlite.clone())
                .with_endpoints(Duration::from_secs(3600))
                .with_api_keys(Duration::from_secs(3600));
            let tenant = TenantId::new();
            cached
                .create_endpoint(&endpoint(tenant), 100)
                .await
                .unwrap();
            assert_eq!(cached.list_endpoints(tenant).await.unwrap().len(), 1);
            {
                let _change = Changing::start(&cached.changing_endpoints);
                // The change's write, stored; the wrapper has not forgotten anything yet.
                sqlite
                    .create_endpoint(&endpoint(tenant), 100)
                    .await
                    .unwrap();
                assert_eq!(cached.list_endpoints(tenant).await.unwrap().len(), 2);
            }

            let (other, plain) = stored_tenant(sqlite.as_ref(), None).await;
            let key = cached.find_api_key(&plain.hash()).await.unwrap().unwrap();
            let keys = cached.keys.as_ref().unwrap();
            {
                let _revoking = Changing::start(&keys.revoking);
                sqlite.revoke_api_key(other, key.id, 7, true).await.unwrap();
                let seen = cached.find_api_key(&plain.hash()).await.unwrap().unwrap();
                assert_eq!(seen.revoked_at, Some(7));
            }
        }

        /// Local mode's use: every write goes through the wrapper, so whether a tenant has
        /// ordered endpoints (asked at every publish) follows each change at once.
        #[tokio::test]
        async fn ordered_endpoints_are_answered_from_the_cache_and_follow_each_change() {
            let (sqlite, _) = crate::embedded::open_in_memory().unwrap();
            let cached = CachedStore::new(sqlite.clone()).with_endpoints(Duration::from_secs(3600));
            let tenant = TenantId::new();
            let mut strict = endpoint(tenant);
            strict.ordering = crate::model::Ordering::Strict;
            cached
                .create_endpoint(&endpoint(tenant), 100)
                .await
                .unwrap();
            assert!(!cached.has_ordered_endpoints(tenant).await.unwrap());
            cached.create_endpoint(&strict, 100).await.unwrap();
            assert!(cached.has_ordered_endpoints(tenant).await.unwrap());

            // Disabled by the health check: no longer counted.
            let disable = HealthChange::Disable {
                reason: "failing".into(),
                at: 5,
            };
            assert!(cached
                .update_endpoint_health(tenant, strict.id, &disable)
                .await
                .unwrap());
            assert!(!cached.has_ordered_endpoints(tenant).await.unwrap());

            // Answered from the cache: a change behind its back is not seen.
            let mut other = endpoint(tenant);
            other.ordering = crate::model::Ordering::Strict;
            sqlite.create_endpoint(&other, 100).await.unwrap();
            assert!(!cached.has_ordered_endpoints(tenant).await.unwrap());
            assert!(sqlite.has_ordered_endpoints(tenant).await.unwrap());
        }

        #[tokio::test]
        async fn a_cache_left_off_passes_through() {
            let (sqlite, _) = crate::embedded::open_in_memory().unwrap();
            let keys_only =
                CachedStore::new(sqlite.clone()).with_api_keys(Duration::from_secs(3600));
            let tenant = TenantId::new();
            assert!(keys_only.list_endpoints(tenant).await.unwrap().is_empty());
            let behind = endpoint(tenant);
            sqlite.create_endpoint(&behind, 100).await.unwrap();
            assert_eq!(
                keys_only.list_endpoints(tenant).await.unwrap(),
                vec![behind.clone()]
            );
            assert_eq!(
                keys_only.get_endpoint(tenant, behind.id).await.unwrap(),
                Some(behind)
            );

            let (owner, plain) = stored_tenant(sqlite.as_ref(), None).await;
            let endpoints_only =
                CachedStore::new(sqlite.clone()).with_endpoints(Duration::from_secs(3600));
            let record = endpoints_only
                .find_api_key(&plain.hash())
                .await
                .unwrap()
                .unwrap();
            sqlite
                .revoke_api_key(owner, record.id, 3, false)
                .await
                .unwrap();
            let again = endpoints_only
                .find_api_key(&plain.hash())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(again.revoked_at, Some(3));
        }
    }
}
