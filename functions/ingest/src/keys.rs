//! A store wrapper for the warm ingest function: the API key a request carries is looked
//! up once and its record reused for a few seconds, so a publisher's burst of requests
//! costs one read, not one per request. The price is that a revoked key keeps publishing
//! through a warm function for up to that long after the revocation (the api function
//! revokes, and cannot tell the ingest functions). Unknown keys are not remembered: a key
//! is usable as soon as it is created. Everything else passes straight through. Local
//! mode does not use it, so there a revocation takes effect at once.

use std::collections::HashMap;
use std::sync::Mutex;
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

/// At most this many keys are remembered; when full, the cache starts over.
const MAX_KEYS: usize = 10_000;

pub struct CachedKeys {
    inner: SharedStore,
    ttl: Duration,
    keys: Mutex<HashMap<KeyHash, (Instant, ApiKeyRecord)>>,
}

impl CachedKeys {
    pub fn new(inner: SharedStore, ttl: Duration) -> Self {
        CachedKeys {
            inner,
            ttl,
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, hash: &KeyHash) -> Option<ApiKeyRecord> {
        self.lock()
            .get(hash)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, record)| record.clone())
    }

    fn remember(&self, record: &ApiKeyRecord) {
        let mut keys = self.lock();
        if keys.len() >= MAX_KEYS {
            keys.clear();
        }
        keys.insert(record.hash.clone(), (Instant::now(), record.clone()));
    }

    fn forget(&self, tenant: TenantId, id: ApiKeyId) {
        self.lock()
            .retain(|_, (_, record)| !(record.tenant == tenant && record.id == id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyHash, (Instant, ApiKeyRecord)>> {
        // A poisoned cache is still a valid cache.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl TenantStore for CachedKeys {
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
        let revoked = self.inner.revoke_api_key(tenant, id, at).await?;
        self.forget(tenant, id);
        Ok(revoked)
    }
    async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKeyRecord>> {
        if let Some(record) = self.cached(hash) {
            return Ok(Some(record));
        }
        let found = self.inner.find_api_key(hash).await?;
        if let Some(record) = &found {
            self.remember(record);
        }
        Ok(found)
    }
    async fn operator_key_hash(&self) -> Result<Option<KeyHash>> {
        self.inner.operator_key_hash().await
    }
    async fn init_operator_key_hash(&self, hash: &KeyHash) -> Result<bool> {
        self.inner.init_operator_key_hash(hash).await
    }
}

#[async_trait]
impl EndpointStore for CachedKeys {
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
        self.inner.delete_domain(tenant, name).await
    }
    async fn put_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        self.inner.put_endpoint(endpoint).await
    }
    async fn get_endpoint(&self, tenant: TenantId, id: EndpointId) -> Result<Option<Endpoint>> {
        self.inner.get_endpoint(tenant, id).await
    }
    async fn list_endpoints(&self, tenant: TenantId) -> Result<Vec<Endpoint>> {
        self.inner.list_endpoints(tenant).await
    }
    async fn delete_endpoint(&self, tenant: TenantId, id: EndpointId) -> Result<bool> {
        self.inner.delete_endpoint(tenant, id).await
    }
    async fn update_endpoint_health(
        &self,
        tenant: TenantId,
        id: EndpointId,
        change: &HealthChange,
    ) -> Result<bool> {
        self.inner.update_endpoint_health(tenant, id, change).await
    }
}

#[async_trait]
impl MessageStore for CachedKeys {
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
impl EventTypeStore for CachedKeys {
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
impl DeliveryStore for CachedKeys {
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
    use hookline_core::contract::stored_tenant;
    use hookline_core::keys::PlainKey;

    use super::*;

    #[tokio::test]
    async fn found_keys_are_reused_for_the_ttl_and_unknown_ones_never() {
        let (sqlite, _) = hookline_core::embedded::open_in_memory().unwrap();
        let cached = CachedKeys::new(sqlite.clone(), Duration::from_secs(3600));
        let (tenant, plain) = stored_tenant(sqlite.as_ref(), None).await;
        let record = cached.find_api_key(&plain.hash()).await.unwrap().unwrap();
        assert_eq!(record.tenant, tenant);

        // Revoked behind the cache's back (by the api function): the record in hand is
        // reused until it expires.
        sqlite.revoke_api_key(tenant, record.id, 5).await.unwrap();
        let reused = cached.find_api_key(&plain.hash()).await.unwrap().unwrap();
        assert_eq!(reused.revoked_at, None);
        let short = CachedKeys::new(sqlite.clone(), Duration::ZERO);
        let fresh = short.find_api_key(&plain.hash()).await.unwrap().unwrap();
        assert_eq!(fresh.revoked_at, Some(5));

        // Revoked through the cache: seen at once.
        let (other, other_plain) = stored_tenant(sqlite.as_ref(), None).await;
        let other_key = cached
            .find_api_key(&other_plain.hash())
            .await
            .unwrap()
            .unwrap();
        assert!(cached.revoke_api_key(other, other_key.id, 7).await.unwrap());
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
}
