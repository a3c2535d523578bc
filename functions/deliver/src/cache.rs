//! A store wrapper for the warm deliver function: a tenant's endpoints are read once and
//! reused for a few seconds, so a burst of events for one tenant costs one query, not one
//! per event, and concurrent misses wait for the one query in flight rather than making
//! their own. A delivery takes its endpoint from that list too, so an endpoint changed
//! through the API (deleted, disabled, its URL or secret) is seen within the cache's
//! lifetime rather than at once. Everything else passes straight through.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hookline_core::ids::{ApiKeyId, EndpointId, MessageId, TenantId};
use hookline_core::keys::KeyHash;
use hookline_core::model::{
    ApiKeyRecord, Attempt, CustomEventType, Delivery, Domain, Endpoint, FailedQuery, HealthChange,
    Message, MessageQuery, Millis, Page, Tenant,
};
use hookline_core::ports::{
    DeliveryStore, EndpointStore, EventTypeStore, Inserted, MessageStore, SharedStore, TenantStore,
};
use hookline_core::Result;

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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Slot<V>>> {
        // A poisoned cache is still a valid cache.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct CachedEndpoints {
    inner: SharedStore,
    endpoints: Memo<TenantId, Arc<Vec<Endpoint>>>,
}

impl CachedEndpoints {
    pub fn new(inner: SharedStore, ttl: Duration) -> Self {
        CachedEndpoints {
            inner,
            endpoints: Memo::new(ttl),
        }
    }

    async fn endpoints(&self, tenant: TenantId) -> Result<Arc<Vec<Endpoint>>> {
        self.endpoints
            .get(tenant, || async {
                Ok(Arc::new(self.inner.list_endpoints(tenant).await?))
            })
            .await
    }

    fn forget(&self, tenant: TenantId) {
        self.endpoints.forget(&tenant);
    }
}

#[async_trait]
impl EndpointStore for CachedEndpoints {
    async fn create_domain(&self, domain: &Domain) -> Result<()> {
        self.inner.create_domain(domain).await
    }
    async fn get_domain(&self, tenant: TenantId, name: &str) -> Result<Option<Domain>> {
        self.inner.get_domain(tenant, name).await
    }
    async fn list_domains(&self, tenant: TenantId) -> Result<Vec<Domain>> {
        self.inner.list_domains(tenant).await
    }
    async fn delete_domain(&self, tenant: TenantId, name: &str) -> Result<bool> {
        self.forget(tenant);
        self.inner.delete_domain(tenant, name).await
    }
    async fn put_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        self.forget(endpoint.tenant);
        self.inner.put_endpoint(endpoint).await
    }
    async fn get_endpoint(&self, tenant: TenantId, id: EndpointId) -> Result<Option<Endpoint>> {
        Ok(self
            .endpoints(tenant)
            .await?
            .iter()
            .find(|e| e.id == id)
            .cloned())
    }
    async fn list_endpoints(&self, tenant: TenantId) -> Result<Vec<Endpoint>> {
        Ok(self.endpoints(tenant).await?.as_ref().clone())
    }
    async fn delete_endpoint(&self, tenant: TenantId, id: EndpointId) -> Result<bool> {
        self.forget(tenant);
        self.inner.delete_endpoint(tenant, id).await
    }
    async fn update_endpoint_health(
        &self,
        tenant: TenantId,
        id: EndpointId,
        change: &HealthChange,
    ) -> Result<bool> {
        let changed = self
            .inner
            .update_endpoint_health(tenant, id, change)
            .await?;
        // Forgotten after the write, so a read in between cannot cache the old state.
        self.forget(tenant);
        Ok(changed)
    }
}

#[async_trait]
impl TenantStore for CachedEndpoints {
    async fn create_tenant(&self, tenant: &Tenant, first_key: &ApiKeyRecord) -> Result<()> {
        self.inner.create_tenant(tenant, first_key).await
    }
    async fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
        self.inner.get_tenant(id).await
    }
    async fn list_sub_accounts(&self, parent: TenantId) -> Result<Vec<Tenant>> {
        self.inner.list_sub_accounts(parent).await
    }
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        self.inner.insert_api_key(key).await
    }
    async fn list_api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKeyRecord>> {
        self.inner.list_api_keys(tenant).await
    }
    async fn revoke_api_key(&self, tenant: TenantId, id: ApiKeyId, at: Millis) -> Result<bool> {
        self.inner.revoke_api_key(tenant, id, at).await
    }
    async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKeyRecord>> {
        self.inner.find_api_key(hash).await
    }
    async fn operator_key_hash(&self) -> Result<Option<KeyHash>> {
        self.inner.operator_key_hash().await
    }
    async fn init_operator_key_hash(&self, hash: &KeyHash) -> Result<bool> {
        self.inner.init_operator_key_hash(hash).await
    }
}

#[async_trait]
impl MessageStore for CachedEndpoints {
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
impl EventTypeStore for CachedEndpoints {
    async fn create_event_type(&self, def: &CustomEventType) -> Result<()> {
        self.inner.create_event_type(def).await
    }
    async fn get_event_type(&self, name: &str) -> Result<Option<CustomEventType>> {
        self.inner.get_event_type(name).await
    }
    async fn list_event_types(&self) -> Result<Vec<CustomEventType>> {
        self.inner.list_event_types().await
    }
}

#[async_trait]
impl DeliveryStore for CachedEndpoints {
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
            .get(1, || async {
                Err(hookline_core::Error::backend("fetch", "down"))
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(memo.get(1, || async { Ok(7) }).await.unwrap(), 7);
    }

    fn endpoint(tenant: TenantId) -> Endpoint {
        hookline_core::contract::endpoint_to(tenant, "https://example.com/", None)
    }

    #[tokio::test]
    async fn endpoints_are_cached_for_the_ttl_and_forgotten_on_change() {
        let (sqlite, _) = hookline_core::embedded::open_in_memory().unwrap();
        let cached = CachedEndpoints::new(sqlite.clone(), Duration::from_secs(3600));
        let tenant = TenantId::new();
        let first = endpoint(tenant);
        cached.put_endpoint(&first).await.unwrap();
        assert_eq!(cached.list_endpoints(tenant).await.unwrap().len(), 1);

        // Written behind the cache's back: not seen until the entry expires.
        sqlite.put_endpoint(&endpoint(tenant)).await.unwrap();
        assert_eq!(cached.list_endpoints(tenant).await.unwrap().len(), 1);
        assert!(cached
            .get_endpoint(tenant, first.id)
            .await
            .unwrap()
            .is_some());

        // Written through the cache: seen at once.
        cached.put_endpoint(&endpoint(tenant)).await.unwrap();
        assert_eq!(cached.list_endpoints(tenant).await.unwrap().len(), 3);
        cached.delete_endpoint(tenant, first.id).await.unwrap();
        assert!(cached
            .get_endpoint(tenant, first.id)
            .await
            .unwrap()
            .is_none());

        let short = CachedEndpoints::new(sqlite.clone(), Duration::ZERO);
        sqlite.put_endpoint(&endpoint(tenant)).await.unwrap();
        assert_eq!(short.list_endpoints(tenant).await.unwrap().len(), 3);
    }
}
