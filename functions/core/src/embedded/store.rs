//! The storage ports on SQLite: tenants and keys, domains and endpoints, messages and
//! idempotency keys, delivery state and attempts, and the operator's event types. Ids are stored as their text form (ULIDs
//! sort by time as text), times as integer milliseconds, structured fields as JSON text.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::{duration_ms, Db};
use crate::credentials::SealedAuth;
use crate::error::{Error, Result};
use crate::ids::{ApiKeyId, EndpointId, MessageId, TenantId};
use crate::keys::KeyHash;
use crate::model::{
    ApiKeyRecord, Attempt, AttemptOutcome, BodyFormat, CustomEventType, Delivery, DeliveryStatus,
    Domain, Endpoint, EndpointStatus, FailedQuery, HealthChange, Message, MessageQuery, Millis,
    Ordering, Page, PageQuery, PortalSession, Tenant,
};
use crate::ports::{
    DeliveryStore, EndpointStore, EventTypeStore, MessageStore, PortalStore, TenantStore, Written,
    MAX_PAGE,
};

const OPERATOR_KEY_SETTING: &str = "operator_key_hash";

/// [`crate::ports::Store`] on the shared SQLite database.
pub struct SqliteStore {
    pub(super) db: Db,
}

impl SqliteStore {
    pub(crate) fn new(db: Db) -> Self {
        SqliteStore { db }
    }

    /// Drops every delivery lease. Local mode calls this at startup: one process owns the
    /// file, so a lease left in it belongs to a worker that no longer exists and would only
    /// hold its delivery back until it expired.
    pub async fn clear_leases(&self) -> Result<()> {
        self.db
            .write("clear delivery leases", |conn| {
                conn.prepare_cached(
                    "UPDATE deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL",
                )?
                .execute([])?;
                Ok(())
            })
            .await
    }

    /// A write whose job panics on the writer thread. The panic comes back in the caller,
    /// and the writer goes on with the next job.
    #[cfg(feature = "fault-injection")]
    pub async fn panicking_write(&self) -> Result<()> {
        self.db
            .write("fault injection", |_| -> rusqlite::Result<()> {
                panic!("injected panic in a database write")
            })
            .await
    }
}

// ---- row decoding ----------------------------------------------------------------------

fn conversion_error(
    idx: usize,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into())
}

/// A column holding the text form of a value (ids above all).
fn parsed<T>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: String = row.get(idx)?;
    text.parse().map_err(|e| conversion_error(idx, e))
}

fn json<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| conversion_error(idx, e))
}

fn json_opt<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| conversion_error(idx, e)))
        .transpose()
}

/// A column holding one of the `as_str` names of an enum.
fn named<T>(row: &Row<'_>, idx: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    parse(&text).ok_or_else(|| conversion_error(idx, format!("unknown value {text:?}")))
}

fn to_json(what: &'static str, value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::backend(what, e))
}

/// A column holding the text form of an optional value.
fn parsed_opt<T>(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<T>>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: Option<String> = row.get(idx)?;
    text.map(|t| t.parse().map_err(|e| conversion_error(idx, e)))
        .transpose()
}

/// Runs a listing query whose parameters are `(owner, after, limit)` (`?2` is NULL for
/// the first page) and which selects one row past the page, and cuts the page: the cursor
/// is the last item's key when another page follows.
fn paged<T>(
    conn: &Connection,
    sql: &str,
    owner: Option<String>,
    page: &PageQuery,
    row: fn(&Row<'_>) -> rusqlite::Result<T>,
    key: fn(&T) -> String,
) -> rusqlite::Result<Page<T>> {
    let limit = page.limit.clamp(1, MAX_PAGE);
    let mut items = conn
        .prepare_cached(sql)?
        .query_map(params![owner, page.after, limit + 1], row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = if more { items.last().map(key) } else { None };
    Ok(Page { items, next_cursor })
}

/// What an `UPDATE` or `DELETE` conditional on a version did, told apart by whether the
/// record exists.
fn conditional(
    conn: &Connection,
    changed: usize,
    exists_sql: &str,
    key: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<Written> {
    if changed > 0 {
        return Ok(Written::Done);
    }
    let exists = conn
        .prepare_cached(exists_sql)?
        .query_row(key, |_| Ok(()))
        .optional()?
        .is_some();
    Ok(if exists {
        Written::Stale
    } else {
        Written::Missing
    })
}

const TENANT_COLUMNS: &str = "id, name, created_at, parent";

fn tenant_row(row: &Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: parsed(row, 0)?,
        name: row.get(1)?,
        created_at: row.get(2)?,
        parent: parsed_opt(row, 3)?,
    })
}

const KEY_COLUMNS: &str = "id, tenant, hash, prefix, created_at, revoked_at";

fn key_row(row: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: parsed(row, 0)?,
        tenant: parsed(row, 1)?,
        hash: KeyHash::from_hex(row.get(2)?),
        prefix: row.get(3)?,
        created_at: row.get(4)?,
        revoked_at: row.get(5)?,
    })
}

fn insert_key(conn: &Connection, key: &ApiKeyRecord) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO api_keys (id, tenant, hash, prefix, created_at, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        key.id.to_string(),
        key.tenant.to_string(),
        key.hash.as_hex(),
        key.prefix,
        key.created_at,
        key.revoked_at,
    ])?;
    Ok(())
}

const DOMAIN_COLUMNS: &str = "tenant, name, created_at";

fn domain_row(row: &Row<'_>) -> rusqlite::Result<Domain> {
    Ok(Domain {
        tenant: parsed(row, 0)?,
        name: row.get(1)?,
        created_at: row.get(2)?,
    })
}

const ENDPOINT_COLUMNS: &str = "id, tenant, url, description, event_types, domain, format, \
     secrets, status, disabled_reason, created_at, updated_at, disabled_at, failing_since, \
     rate_limit, version, filter, headers, auth, credentials, ordering";

fn endpoint_row(row: &Row<'_>) -> rusqlite::Result<Endpoint> {
    Ok(Endpoint {
        id: parsed(row, 0)?,
        tenant: parsed(row, 1)?,
        url: row.get(2)?,
        description: row.get(3)?,
        event_types: json_opt(row, 4)?,
        domain: row.get(5)?,
        format: named(row, 6, BodyFormat::parse)?,
        secrets: json(row, 7)?,
        status: named(row, 8, EndpointStatus::parse)?,
        disabled_reason: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
        disabled_at: row.get(12)?,
        failing_since: row.get(13)?,
        rate_limit: row.get(14)?,
        version: row.get(15)?,
        filter: json_opt(row, 16)?,
        headers: json_opt(row, 17)?.unwrap_or_default(),
        auth: match (json_opt(row, 18)?, row.get::<_, Option<Vec<u8>>>(19)?) {
            (Some(summary), Some(sealed)) => Some(SealedAuth { summary, sealed }),
            _ => None,
        },
        ordering: named(row, 20, Ordering::parse)?,
    })
}

/// An endpoint's columns as statement parameters, in [`ENDPOINT_COLUMNS`] order but the
/// version, which each statement sets itself.
struct EndpointRow {
    id: String,
    tenant: String,
    url: String,
    description: String,
    event_types: Option<String>,
    domain: Option<String>,
    format: &'static str,
    secrets: String,
    status: &'static str,
    disabled_reason: Option<String>,
    created_at: Millis,
    updated_at: Millis,
    disabled_at: Option<Millis>,
    failing_since: Option<Millis>,
    rate_limit: Option<u32>,
    filter: Option<String>,
    headers: Option<String>,
    auth: Option<String>,
    credentials: Option<Vec<u8>>,
    ordering: &'static str,
}

impl EndpointRow {
    fn of(e: &Endpoint) -> Result<Self> {
        Ok(EndpointRow {
            id: e.id.to_string(),
            tenant: e.tenant.to_string(),
            url: e.url.clone(),
            description: e.description.clone(),
            event_types: e
                .event_types
                .as_ref()
                .map(|types| to_json("encode endpoint event types", types))
                .transpose()?,
            domain: e.domain.clone(),
            format: e.format.as_str(),
            secrets: to_json("encode endpoint secrets", &e.secrets)?,
            status: e.status.as_str(),
            disabled_reason: e.disabled_reason.clone(),
            created_at: e.created_at,
            updated_at: e.updated_at,
            disabled_at: e.disabled_at,
            failing_since: e.failing_since,
            rate_limit: e.rate_limit,
            filter: e
                .filter
                .as_ref()
                .map(|f| to_json("encode endpoint filter", f))
                .transpose()?,
            headers: (!e.headers.is_empty())
                .then(|| to_json("encode endpoint headers", &e.headers))
                .transpose()?,
            auth: e
                .auth
                .as_ref()
                .map(|a| to_json("encode endpoint auth", &a.summary))
                .transpose()?,
            credentials: e.auth.as_ref().map(|a| a.sealed.clone()),
            ordering: e.ordering.as_str(),
        })
    }

    /// Inserts it as a new endpoint at version 1, if the tenant has fewer than `max`.
    fn insert(&self, conn: &Connection, max: usize) -> Result<()> {
        let count: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM endpoints WHERE tenant = ?1")
            .and_then(|mut st| st.query_row([&self.tenant], |row| row.get(0)))
            .map_err(|e| Error::backend("count endpoints", e))?;
        if count as u64 >= max as u64 {
            return Err(Error::too_many_endpoints(max));
        }
        conn.prepare_cached(&format!(
            "INSERT INTO endpoints ({ENDPOINT_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, 1, ?16, ?17, ?18, ?19, ?20)"
        ))
        .and_then(|mut st| {
            st.execute(params![
                self.id,
                self.tenant,
                self.url,
                self.description,
                self.event_types,
                self.domain,
                self.format,
                self.secrets,
                self.status,
                self.disabled_reason,
                self.created_at,
                self.updated_at,
                self.disabled_at,
                self.failing_since,
                self.rate_limit,
                self.filter,
                self.headers,
                self.auth,
                self.credentials,
                self.ordering,
            ])
        })
        .map_err(|e| Error::backend("insert endpoint", e))?;
        Ok(())
    }
}

const MESSAGE_COLUMNS: &str =
    "id, tenant, domain, event_type, payload, idempotency_key, received_at, targets, publisher";

fn message_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    let payload: String = row.get(4)?;
    Ok(Message {
        id: parsed(row, 0)?,
        tenant: parsed(row, 1)?,
        publisher: parsed_opt(row, 8)?,
        domain: row.get(2)?,
        event_type: row.get(3)?,
        payload: RawValue::from_string(payload).map_err(|e| conversion_error(4, e))?,
        idempotency_key: row.get(5)?,
        received_at: row.get(6)?,
        targets: json(row, 7)?,
    })
}

const EVENT_TYPE_COLUMNS: &str = "name, provider, description, sample, created_at";

fn event_type_row(row: &Row<'_>) -> rusqlite::Result<CustomEventType> {
    let sample: String = row.get(3)?;
    Ok(CustomEventType {
        name: row.get(0)?,
        provider: row.get(1)?,
        description: row.get(2)?,
        sample: RawValue::from_string(sample).map_err(|e| conversion_error(3, e))?,
        created_at: row.get(4)?,
    })
}

const DELIVERY_COLUMNS: &str = "message, endpoint, tenant, status, attempts, next_attempt_at, \
     last_status_code, last_error, lease_until, updated_at";

fn delivery_row(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        message: parsed(row, 0)?,
        endpoint: parsed(row, 1)?,
        tenant: parsed(row, 2)?,
        status: named(row, 3, DeliveryStatus::parse)?,
        attempts: row.get(4)?,
        next_attempt_at: row.get(5)?,
        last_status_code: row.get(6)?,
        last_error: row.get(7)?,
        lease_until: row.get(8)?,
        updated_at: row.get(9)?,
    })
}

/// Inserts a delivery row unless one exists for its (message, endpoint); returns whether
/// it inserted.
fn insert_delivery_if_absent(conn: &Connection, d: &Delivery) -> rusqlite::Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO deliveries (message, endpoint, tenant, status, attempts,
                 next_attempt_at, last_status_code, last_error, lease_until, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (message, endpoint) DO NOTHING",
        )?
        .execute(params![
            d.message.to_string(),
            d.endpoint.to_string(),
            d.tenant.to_string(),
            d.status.as_str(),
            d.attempts,
            d.next_attempt_at,
            d.last_status_code,
            d.last_error,
            d.lease_until,
            d.updated_at,
        ])?;
    Ok(inserted == 1)
}

const ATTEMPT_COLUMNS: &str = "id, message, endpoint, tenant, number, at, status_code, \
     latency_ms, response, error, outcome";

fn attempt_row(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        id: parsed(row, 0)?,
        message: parsed(row, 1)?,
        endpoint: parsed(row, 2)?,
        tenant: parsed(row, 3)?,
        number: row.get(4)?,
        at: row.get(5)?,
        status_code: row.get(6)?,
        latency_ms: row.get(7)?,
        response: row.get(8)?,
        error: row.get(9)?,
        outcome: named(row, 10, AttemptOutcome::parse)?,
    })
}

// ---- tenants and keys -----------------------------------------------------------------

#[async_trait]
impl TenantStore for SqliteStore {
    async fn create_tenant(&self, tenant: &Tenant, first_key: &ApiKeyRecord) -> Result<()> {
        let tenant = tenant.clone();
        let key = first_key.clone();
        self.db
            .write("create tenant", move |conn| {
                conn.prepare_cached(&format!(
                    "INSERT INTO tenants ({TENANT_COLUMNS}) VALUES (?1, ?2, ?3, ?4)"
                ))?
                .execute(params![
                    tenant.id.to_string(),
                    tenant.name,
                    tenant.created_at,
                    tenant.parent.map(|p| p.to_string()),
                ])?;
                insert_key(conn, &key)
            })
            .await
    }

    async fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
        self.db
            .read("get tenant", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1"
                ))?
                .query_row([id.to_string()], tenant_row)
                .optional()
            })
            .await
    }

    async fn list_sub_accounts(&self, parent: TenantId, page: &PageQuery) -> Result<Page<Tenant>> {
        let page = page.clone();
        self.db
            .read("list sub-accounts", move |conn| {
                paged(
                    conn,
                    &format!(
                        "SELECT {TENANT_COLUMNS} FROM tenants
                         WHERE parent = ?1 AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3"
                    ),
                    Some(parent.to_string()),
                    &page,
                    tenant_row,
                    |t| t.id.to_string(),
                )
            })
            .await
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        let key = key.clone();
        self.db
            .write("insert api key", move |conn| insert_key(conn, &key))
            .await
    }

    async fn get_api_key(&self, tenant: TenantId, id: ApiKeyId) -> Result<Option<ApiKeyRecord>> {
        self.db
            .read("get api key", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant = ?1 AND id = ?2"
                ))?
                .query_row([tenant.to_string(), id.to_string()], key_row)
                .optional()
            })
            .await
    }

    async fn list_api_keys(
        &self,
        tenant: TenantId,
        page: &PageQuery,
    ) -> Result<Page<ApiKeyRecord>> {
        let page = page.clone();
        self.db
            .read("list api keys", move |conn| {
                paged(
                    conn,
                    &format!(
                        "SELECT {KEY_COLUMNS} FROM api_keys
                         WHERE tenant = ?1 AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3"
                    ),
                    Some(tenant.to_string()),
                    &page,
                    key_row,
                    |k| k.id.to_string(),
                )
            })
            .await
    }

    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at: Millis,
        only_if_live: bool,
    ) -> Result<Written> {
        self.db
            .write("revoke api key", move |conn| {
                let (tenant, id) = (tenant.to_string(), id.to_string());
                // Matching an already revoked key still counts as a change unless the
                // caller wants a live one; the first revocation time is kept.
                let changed = conn
                    .prepare_cached(
                        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?3)
                         WHERE tenant = ?1 AND id = ?2 AND (?4 = 0 OR revoked_at IS NULL)",
                    )?
                    .execute(params![tenant, id, at, only_if_live])?;
                conditional(
                    conn,
                    changed,
                    "SELECT 1 FROM api_keys WHERE tenant = ?1 AND id = ?2",
                    &[&tenant, &id],
                )
            })
            .await
    }

    async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKeyRecord>> {
        let hash = hash.as_hex().to_owned();
        self.db
            .read("find api key", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = ?1"
                ))?
                .query_row([hash], key_row)
                .optional()
            })
            .await
    }

    async fn operator_key_hash(&self) -> Result<Option<KeyHash>> {
        self.db
            .read("get operator key", |conn| {
                conn.prepare_cached("SELECT value FROM settings WHERE name = ?1")?
                    .query_row([OPERATOR_KEY_SETTING], |row| {
                        row.get(0).map(KeyHash::from_hex)
                    })
                    .optional()
            })
            .await
    }

    async fn init_operator_key_hash(&self, hash: &KeyHash) -> Result<bool> {
        let hash = hash.as_hex().to_owned();
        self.db
            .write("init operator key", move |conn| {
                let inserted = conn
                    .prepare_cached(
                        "INSERT INTO settings (name, value) VALUES (?1, ?2)
                         ON CONFLICT (name) DO NOTHING",
                    )?
                    .execute([OPERATOR_KEY_SETTING, hash.as_str()])?;
                Ok(inserted == 1)
            })
            .await
    }

    async fn probe(&self) -> Result<()> {
        self.db.probe("tenants").await
    }
}

// ---- domains and endpoints ------------------------------------------------------------

#[async_trait]
impl EndpointStore for SqliteStore {
    async fn create_domain(&self, domain: &Domain) -> Result<()> {
        let d = domain.clone();
        let inserted = self
            .db
            .write("create domain", move |conn| {
                let n = conn
                    .prepare_cached(
                        "INSERT INTO domains (tenant, name, created_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT (tenant, name) DO NOTHING",
                    )?
                    .execute(params![d.tenant.to_string(), d.name, d.created_at])?;
                Ok(n == 1)
            })
            .await?;
        if inserted {
            Ok(())
        } else {
            Err(Error::conflict(
                "domain_exists",
                format!("domain {:?} already exists", domain.name),
            ))
        }
    }

    async fn get_domain(&self, tenant: TenantId, name: &str) -> Result<Option<Domain>> {
        let name = name.to_owned();
        self.db
            .read("get domain", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {DOMAIN_COLUMNS} FROM domains WHERE tenant = ?1 AND name = ?2"
                ))?
                .query_row(params![tenant.to_string(), name], domain_row)
                .optional()
            })
            .await
    }

    async fn list_domains(&self, tenant: TenantId, page: &PageQuery) -> Result<Page<Domain>> {
        let page = page.clone();
        self.db
            .read("list domains", move |conn| {
                // The default BINARY collation orders by UTF-8 bytes, as DynamoDB does.
                paged(
                    conn,
                    &format!(
                        "SELECT {DOMAIN_COLUMNS} FROM domains
                         WHERE tenant = ?1 AND (?2 IS NULL OR name > ?2) ORDER BY name LIMIT ?3"
                    ),
                    Some(tenant.to_string()),
                    &page,
                    domain_row,
                    |d| d.name.clone(),
                )
            })
            .await
    }

    async fn delete_domain(
        &self,
        tenant: TenantId,
        name: &str,
        created_at: Option<Millis>,
    ) -> Result<Written> {
        let name = name.to_owned();
        self.db
            .write("delete domain", move |conn| {
                let tenant = tenant.to_string();
                let deleted = conn
                    .prepare_cached(
                        "DELETE FROM domains
                         WHERE tenant = ?1 AND name = ?2 AND (?3 IS NULL OR created_at = ?3)",
                    )?
                    .execute(params![tenant, name, created_at])?;
                let written = conditional(
                    conn,
                    deleted,
                    "SELECT 1 FROM domains WHERE tenant = ?1 AND name = ?2",
                    &[&tenant, &name],
                )?;
                if written == Written::Done {
                    conn.prepare_cached("DELETE FROM endpoints WHERE tenant = ?1 AND domain = ?2")?
                        .execute(params![tenant, name])?;
                }
                Ok(written)
            })
            .await
    }

    async fn create_endpoint(&self, endpoint: &Endpoint, max_per_tenant: usize) -> Result<()> {
        let row = EndpointRow::of(endpoint)?;
        self.db
            .write_checked("create endpoint", move |conn| {
                row.insert(conn, max_per_tenant)
            })
            .await
    }

    async fn update_endpoint(&self, endpoint: &Endpoint, expected_version: u64) -> Result<Written> {
        let e = EndpointRow::of(endpoint)?;
        self.db
            .write("update endpoint", move |conn| {
                // Every field but the id, tenant and creation time; the tenant guard keeps
                // a (never expected) id collision from touching another tenant's endpoint.
                let changed = conn
                    .prepare_cached(
                        "UPDATE endpoints SET
                             url = ?3, description = ?4, event_types = ?5, domain = ?6,
                             format = ?7, secrets = ?8, status = ?9, disabled_reason = ?10,
                             updated_at = ?11, disabled_at = ?12, failing_since = ?13,
                             rate_limit = ?14, filter = ?16, headers = ?17, auth = ?18,
                             credentials = ?19, ordering = ?20, version = version + 1
                         WHERE tenant = ?1 AND id = ?2 AND version = ?15",
                    )?
                    .execute(params![
                        e.tenant,
                        e.id,
                        e.url,
                        e.description,
                        e.event_types,
                        e.domain,
                        e.format,
                        e.secrets,
                        e.status,
                        e.disabled_reason,
                        e.updated_at,
                        e.disabled_at,
                        e.failing_since,
                        e.rate_limit,
                        expected_version,
                        e.filter,
                        e.headers,
                        e.auth,
                        e.credentials,
                        e.ordering,
                    ])?;
                conditional(
                    conn,
                    changed,
                    "SELECT 1 FROM endpoints WHERE tenant = ?1 AND id = ?2",
                    &[&e.tenant, &e.id],
                )
            })
            .await
    }

    async fn get_endpoint(&self, tenant: TenantId, id: EndpointId) -> Result<Option<Endpoint>> {
        self.db
            .read("get endpoint", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE tenant = ?1 AND id = ?2"
                ))?
                .query_row([tenant.to_string(), id.to_string()], endpoint_row)
                .optional()
            })
            .await
    }

    async fn list_endpoints(&self, tenant: TenantId) -> Result<Vec<Endpoint>> {
        self.db
            .read("list endpoints", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE tenant = ?1
                     ORDER BY created_at, id"
                ))?
                .query_map([tenant.to_string()], endpoint_row)?
                .collect()
            })
            .await
    }

    async fn has_ordered_endpoints(&self, tenant: TenantId) -> Result<bool> {
        self.db
            .read("look for ordered endpoints", move |conn| {
                conn.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM endpoints WHERE tenant = ?1
                     AND ordering = 'strict' AND status = 'active')",
                )?
                .query_row([tenant.to_string()], |row| row.get(0))
            })
            .await
    }

    async fn list_endpoints_page(
        &self,
        tenant: TenantId,
        page: &PageQuery,
    ) -> Result<Page<Endpoint>> {
        let page = page.clone();
        self.db
            .read("list endpoints", move |conn| {
                paged(
                    conn,
                    &format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM endpoints
                         WHERE tenant = ?1 AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3"
                    ),
                    Some(tenant.to_string()),
                    &page,
                    endpoint_row,
                    |e| e.id.to_string(),
                )
            })
            .await
    }

    async fn delete_endpoint(
        &self,
        tenant: TenantId,
        id: EndpointId,
        expected_version: Option<u64>,
    ) -> Result<Written> {
        self.db
            .write("delete endpoint", move |conn| {
                let (tenant, id) = (tenant.to_string(), id.to_string());
                let deleted = conn
                    .prepare_cached(
                        "DELETE FROM endpoints
                         WHERE tenant = ?1 AND id = ?2 AND (?3 IS NULL OR version = ?3)",
                    )?
                    .execute(params![tenant, id, expected_version])?;
                conditional(
                    conn,
                    deleted,
                    "SELECT 1 FROM endpoints WHERE tenant = ?1 AND id = ?2",
                    &[&tenant, &id],
                )
            })
            .await
    }

    async fn endpoint_group_version(&self, tenant: TenantId, group: &str) -> Result<u64> {
        let group = group.to_owned();
        self.db
            .read("get endpoint group", move |conn| {
                conn.prepare_cached(
                    "SELECT version FROM endpoint_groups WHERE tenant = ?1 AND name = ?2",
                )?
                .query_row(params![tenant.to_string(), group], |row| row.get(0))
                .optional()
                .map(Option::unwrap_or_default)
            })
            .await
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
        let group = group.to_owned();
        let remove: Vec<(String, u64)> = remove
            .iter()
            .map(|e| (e.id.to_string(), e.version))
            .collect();
        let add = add
            .iter()
            .map(EndpointRow::of)
            .collect::<Result<Vec<_>>>()?;
        self.db
            .write_checked("update endpoint group", move |conn| {
                let backend = |e| Error::backend("update endpoint group", e);
                let tenant = tenant.to_string();
                let version: u64 = conn
                    .prepare_cached(
                        "SELECT version FROM endpoint_groups WHERE tenant = ?1 AND name = ?2",
                    )
                    .and_then(|mut st| {
                        st.query_row(params![tenant, group], |row| row.get(0))
                            .optional()
                    })
                    .map_err(backend)?
                    .unwrap_or_default();
                if version != expected_version {
                    return Ok(Written::Stale);
                }
                for (id, version) in &remove {
                    let deleted = conn
                        .prepare_cached(
                            "DELETE FROM endpoints WHERE tenant = ?1 AND id = ?2 AND version = ?3",
                        )
                        .and_then(|mut st| st.execute(params![tenant, id, version]))
                        .map_err(backend)?;
                    if deleted == 0 {
                        // Nothing of this job is kept: its savepoint is rolled back.
                        return Err(Error::conflict("stale", "an endpoint changed meanwhile"));
                    }
                }
                for row in &add {
                    row.insert(conn, max_per_tenant)?;
                }
                conn.prepare_cached(
                    "INSERT INTO endpoint_groups (tenant, name, version) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tenant, name) DO UPDATE SET version = excluded.version",
                )
                .and_then(|mut st| st.execute(params![tenant, group, expected_version + 1]))
                .map_err(backend)?;
                Ok(Written::Done)
            })
            .await
            .or_else(|e| match e {
                Error::Conflict { code: "stale", .. } => Ok(Written::Stale),
                other => Err(other),
            })
    }

    async fn update_endpoint_health(
        &self,
        tenant: TenantId,
        id: EndpointId,
        change: &HealthChange,
    ) -> Result<bool> {
        let change = change.clone();
        self.db
            .write("update endpoint health", move |conn| {
                let (tenant, id) = (tenant.to_string(), id.to_string());
                let changed = match change {
                    HealthChange::Failing { at } => conn
                        .prepare_cached(
                            "UPDATE endpoints SET failing_since = ?3, version = version + 1
                             WHERE tenant = ?1 AND id = ?2 AND failing_since IS NULL",
                        )?
                        .execute(params![tenant, id, at])?,
                    HealthChange::Recovered => conn
                        .prepare_cached(
                            "UPDATE endpoints SET failing_since = NULL, version = version + 1
                             WHERE tenant = ?1 AND id = ?2 AND failing_since IS NOT NULL",
                        )?
                        .execute(params![tenant, id])?,
                    HealthChange::Disable { reason, at } => conn
                        .prepare_cached(
                            "UPDATE endpoints SET status = 'disabled', disabled_reason = ?3,
                                 disabled_at = ?4, updated_at = ?4, version = version + 1
                             WHERE tenant = ?1 AND id = ?2 AND status = 'active'",
                        )?
                        .execute(params![tenant, id, reason, at])?,
                };
                Ok(changed == 1)
            })
            .await
    }
}

// ---- messages and idempotency keys ----------------------------------------------------

#[async_trait]
impl MessageStore for SqliteStore {
    async fn insert_message(&self, message: &Message) -> Result<Message> {
        let m = message.clone();
        let targets = to_json("encode message targets", &m.targets)?;
        self.db
            .write("insert message", move |conn| {
                let inserted =
                    conn.prepare_cached(&format!(
                        "INSERT INTO messages ({MESSAGE_COLUMNS})
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                         ON CONFLICT (id) DO NOTHING"
                    ))?
                    .execute(params![
                        m.id.to_string(),
                        m.tenant.to_string(),
                        m.domain,
                        m.event_type,
                        m.payload.get(),
                        m.idempotency_key,
                        m.received_at,
                        targets,
                        m.publisher.map(|p| p.to_string()),
                    ])? == 1;
                if inserted {
                    // What was stored is the input; reading it back (and parsing its
                    // payload again) would cost the writer for nothing.
                    return Ok(m);
                }
                // Read back rather than echo the input: a retried publish must see the
                // version that was stored first.
                conn.prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1"
                ))?
                .query_row([m.id.to_string()], message_row)
            })
            .await
    }

    async fn get_message(&self, tenant: TenantId, id: MessageId) -> Result<Option<Message>> {
        self.db
            .read("get message", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE tenant = ?1 AND id = ?2"
                ))?
                .query_row([tenant.to_string(), id.to_string()], message_row)
                .optional()
            })
            .await
    }

    async fn list_messages(&self, tenant: TenantId, query: &MessageQuery) -> Result<Page<Message>> {
        let limit = query.limit.clamp(1, MAX_PAGE);
        let before = query.before.map(|id| id.to_string());
        let event_type = query.event_type.clone();
        self.db
            .read("list messages", move |conn| {
                // One statement per filter combination, so each uses its index range
                // instead of a `?n IS NULL OR ...` that defeats it.
                let mut sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE tenant = ?1");
                sql.push_str(if before.is_some() {
                    " AND id < ?2"
                } else {
                    " AND ?2 IS NULL"
                });
                sql.push_str(if event_type.is_some() {
                    " AND event_type = ?3"
                } else {
                    " AND ?3 IS NULL"
                });
                sql.push_str(" ORDER BY id DESC LIMIT ?4");
                // One row past the page tells whether another page follows.
                let mut items = conn
                    .prepare_cached(&sql)?
                    .query_map(
                        params![tenant.to_string(), before, event_type, limit + 1],
                        message_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let more = items.len() > limit;
                items.truncate(limit);
                let next_cursor = if more {
                    items.last().map(|m| m.id.to_string())
                } else {
                    None
                };
                Ok(Page { items, next_cursor })
            })
            .await
    }

    async fn claim_idempotency_key(
        &self,
        tenant: TenantId,
        key: &str,
        id: MessageId,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<MessageId>> {
        let key = key.to_owned();
        let expires_at = now.saturating_add(duration_ms(ttl));
        self.db
            .write("claim idempotency key", move |conn| {
                let tenant = tenant.to_string();
                let bound: Option<MessageId> = conn
                    .prepare_cached(
                        "SELECT message FROM idempotency_keys
                         WHERE tenant = ?1 AND key = ?2 AND expires_at > ?3",
                    )?
                    .query_row(params![tenant, key, now], |row| parsed(row, 0))
                    .optional()?;
                if bound.is_some() {
                    return Ok(bound);
                }
                // No live binding: a missing or expired row is (re)bound to this message.
                conn.prepare_cached(
                    "INSERT INTO idempotency_keys (tenant, key, message, expires_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (tenant, key) DO UPDATE SET
                         message = excluded.message, expires_at = excluded.expires_at",
                )?
                .execute(params![tenant, key, id.to_string(), expires_at])?;
                Ok(None)
            })
            .await
    }
}

// ---- event types --------------------------------------------------------------------

#[async_trait]
impl EventTypeStore for SqliteStore {
    async fn create_event_type(&self, def: &CustomEventType) -> Result<()> {
        let d = def.clone();
        let inserted = self
            .db
            .write("create event type", move |conn| {
                let n = conn
                    .prepare_cached(&format!(
                        "INSERT INTO event_types ({EVENT_TYPE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (name) DO NOTHING"
                    ))?
                    .execute(params![
                        d.name,
                        d.provider,
                        d.description,
                        d.sample.get(),
                        d.created_at
                    ])?;
                Ok(n == 1)
            })
            .await?;
        if inserted {
            Ok(())
        } else {
            Err(Error::conflict(
                "event_type_exists",
                format!("event type {:?} already exists", def.name),
            ))
        }
    }

    async fn get_event_type(&self, name: &str) -> Result<Option<CustomEventType>> {
        let name = name.to_owned();
        self.db
            .read("get event type", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {EVENT_TYPE_COLUMNS} FROM event_types WHERE name = ?1"
                ))?
                .query_row([name], event_type_row)
                .optional()
            })
            .await
    }

    async fn list_event_types(&self, page: &PageQuery) -> Result<Page<CustomEventType>> {
        let page = page.clone();
        self.db
            .read("list event types", move |conn| {
                // The default BINARY collation orders by UTF-8 bytes, as DynamoDB does.
                // (`?1` is a placeholder for the owner every other listing has.)
                paged(
                    conn,
                    &format!(
                        "SELECT {EVENT_TYPE_COLUMNS} FROM event_types
                         WHERE ?1 IS NULL AND (?2 IS NULL OR name > ?2) ORDER BY name LIMIT ?3"
                    ),
                    None,
                    &page,
                    event_type_row,
                    |t| t.name.clone(),
                )
            })
            .await
    }
}

// ---- portal tokens and sessions -------------------------------------------------------

#[async_trait]
impl PortalStore for SqliteStore {
    async fn insert_login_token(
        &self,
        hash: &KeyHash,
        tenant: TenantId,
        expires_at: Millis,
    ) -> Result<()> {
        let hash = hash.as_hex().to_owned();
        self.db
            .write("insert portal login token", move |conn| {
                conn.prepare_cached(
                    "INSERT INTO portal_tokens (hash, tenant, expires_at) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![hash, tenant.to_string(), expires_at])?;
                Ok(())
            })
            .await
    }

    async fn take_login_token(&self, hash: &KeyHash, now: Millis) -> Result<Option<TenantId>> {
        let hash = hash.as_hex().to_owned();
        self.db
            .write("take portal login token", move |conn| {
                // Expired tokens go with any use, so the table holds only live ones and
                // the few made since the last login.
                conn.prepare_cached("DELETE FROM portal_tokens WHERE expires_at <= ?1")?
                    .execute([now])?;
                conn.prepare_cached("DELETE FROM portal_tokens WHERE hash = ?1 RETURNING tenant")?
                    .query_row([hash], |row| parsed(row, 0))
                    .optional()
            })
            .await
    }

    async fn insert_portal_session(&self, hash: &KeyHash, session: &PortalSession) -> Result<()> {
        let hash = hash.as_hex().to_owned();
        let s = session.clone();
        self.db
            .write("insert portal session", move |conn| {
                conn.prepare_cached("DELETE FROM portal_sessions WHERE expires_at <= ?1")?
                    .execute([s.created_at])?;
                conn.prepare_cached(
                    "INSERT INTO portal_sessions (hash, tenant, csrf, created_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    hash,
                    s.tenant.to_string(),
                    s.csrf,
                    s.created_at,
                    s.expires_at
                ])?;
                Ok(())
            })
            .await
    }

    async fn get_portal_session(
        &self,
        hash: &KeyHash,
        now: Millis,
    ) -> Result<Option<PortalSession>> {
        let hash = hash.as_hex().to_owned();
        self.db
            .read("get portal session", move |conn| {
                conn.prepare_cached(
                    "SELECT tenant, csrf, created_at, expires_at FROM portal_sessions
                     WHERE hash = ?1 AND expires_at > ?2",
                )?
                .query_row(params![hash, now], |row| {
                    Ok(PortalSession {
                        tenant: parsed(row, 0)?,
                        csrf: row.get(1)?,
                        created_at: row.get(2)?,
                        expires_at: row.get(3)?,
                    })
                })
                .optional()
            })
            .await
    }

    async fn delete_portal_session(&self, hash: &KeyHash) -> Result<()> {
        let hash = hash.as_hex().to_owned();
        self.db
            .write("delete portal session", move |conn| {
                conn.prepare_cached("DELETE FROM portal_sessions WHERE hash = ?1")?
                    .execute([hash])?;
                Ok(())
            })
            .await
    }
}

// ---- deliveries and attempts ----------------------------------------------------------

#[async_trait]
impl DeliveryStore for SqliteStore {
    async fn get_delivery(
        &self,
        message: MessageId,
        endpoint: EndpointId,
    ) -> Result<Option<Delivery>> {
        self.db
            .read("get delivery", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message = ?1 AND endpoint = ?2"
                ))?
                .query_row([message.to_string(), endpoint.to_string()], delivery_row)
                .optional()
            })
            .await
    }

    async fn list_deliveries(&self, message: MessageId) -> Result<Vec<Delivery>> {
        self.db
            .read("list deliveries", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message = ?1 ORDER BY endpoint"
                ))?
                .query_map([message.to_string()], delivery_row)?
                .collect()
            })
            .await
    }

    async fn claim_delivery(
        &self,
        fresh: &Delivery,
        expected_attempts: u32,
        now: Millis,
        lease_until: Millis,
    ) -> Result<bool> {
        let row = Delivery {
            status: DeliveryStatus::Pending,
            attempts: 0,
            lease_until: Some(lease_until),
            ..fresh.clone()
        };
        self.db
            .write("claim delivery", move |conn| {
                // A target without a record is pending with no attempts: creating the
                // record with the lease is the claim.
                if expected_attempts == 0 && insert_delivery_if_absent(conn, &row)? {
                    return Ok(true);
                }
                let changed = conn
                    .prepare_cached(
                        "UPDATE deliveries SET lease_until = ?3
                         WHERE message = ?1 AND endpoint = ?2
                           AND status = 'pending' AND attempts = ?4
                           AND (lease_until IS NULL OR lease_until <= ?5)",
                    )?
                    .execute(params![
                        row.message.to_string(),
                        row.endpoint.to_string(),
                        lease_until,
                        expected_attempts,
                        now,
                    ])?;
                Ok(changed == 1)
            })
            .await
    }

    async fn record_attempt(
        &self,
        delivery: &Delivery,
        expected_attempts: u32,
        attempt: Option<&Attempt>,
    ) -> Result<bool> {
        let d = delivery.clone();
        let attempt = attempt.cloned();
        self.db
            .write("record attempt", move |conn| {
                let updated =
                    conn.prepare_cached(
                        "UPDATE deliveries SET
                             tenant = ?3, status = ?4, attempts = ?5, next_attempt_at = ?6,
                             last_status_code = ?7, last_error = ?8, lease_until = ?9,
                             updated_at = ?10
                         WHERE message = ?1 AND endpoint = ?2 AND attempts = ?11",
                    )?
                    .execute(params![
                        d.message.to_string(),
                        d.endpoint.to_string(),
                        d.tenant.to_string(),
                        d.status.as_str(),
                        d.attempts,
                        d.next_attempt_at,
                        d.last_status_code,
                        d.last_error,
                        d.lease_until,
                        d.updated_at,
                        expected_attempts,
                    ])? == 1;
                // A delivery settled before any claim (its endpoint was deleted or
                // disabled) has no record yet.
                let written =
                    updated || (expected_attempts == 0 && insert_delivery_if_absent(conn, &d)?);
                if !written {
                    return Ok(false);
                }
                if let Some(a) = attempt {
                    conn.prepare_cached(&format!(
                        "INSERT INTO attempts ({ATTEMPT_COLUMNS})
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                    ))?
                    .execute(params![
                        a.id.to_string(),
                        a.message.to_string(),
                        a.endpoint.to_string(),
                        a.tenant.to_string(),
                        a.number,
                        a.at,
                        a.status_code,
                        a.latency_ms,
                        a.response,
                        a.error,
                        a.outcome.as_str(),
                    ])?;
                }
                Ok(true)
            })
            .await
    }

    async fn list_attempts(&self, tenant: TenantId, message: MessageId) -> Result<Vec<Attempt>> {
        self.db
            .read("list attempts", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {ATTEMPT_COLUMNS} FROM attempts
                     WHERE message = ?1 AND tenant = ?2 ORDER BY at, id"
                ))?
                .query_map([message.to_string(), tenant.to_string()], attempt_row)?
                .collect()
            })
            .await
    }

    async fn list_failed_deliveries(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        query: &FailedQuery,
    ) -> Result<Vec<Delivery>> {
        let (from, to) = query.id_range();
        let limit = query.limit.clamp(1, MAX_PAGE);
        self.db
            .read("list failed deliveries", move |conn| {
                // `status = 'failed'` spelled out so the partial index applies.
                let sql = format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries
                     WHERE tenant = ?1 AND endpoint = ?2 AND status = 'failed'
                       AND message >= ?3 AND {}
                     ORDER BY message LIMIT ?5",
                    if to.is_some() {
                        "message <= ?4"
                    } else {
                        "?4 IS NULL"
                    }
                );
                conn.prepare_cached(&sql)?
                    .query_map(
                        params![
                            tenant.to_string(),
                            endpoint.to_string(),
                            from.to_string(),
                            to.map(|t| t.to_string()),
                            limit,
                        ],
                        delivery_row,
                    )?
                    .collect()
            })
            .await
    }

    async fn reopen_delivery(
        &self,
        message: MessageId,
        endpoint: EndpointId,
        expected_attempts: u32,
        now: Millis,
    ) -> Result<bool> {
        self.db
            .write("reopen delivery", move |conn| {
                let changed = conn
                    .prepare_cached(
                        "UPDATE deliveries SET status = 'pending', next_attempt_at = ?4,
                             lease_until = NULL, updated_at = ?4
                         WHERE message = ?1 AND endpoint = ?2
                           AND status = 'failed' AND attempts = ?3",
                    )?
                    .execute(params![
                        message.to_string(),
                        endpoint.to_string(),
                        expected_attempts,
                        now
                    ])?;
                Ok(changed == 1)
            })
            .await
    }
}
