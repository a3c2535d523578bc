//! [`Store`](crate::ports::Store) on one DynamoDB table: tenants and keys, domains and
//! endpoints, messages and idempotency keys, deliveries and attempts, the operator's event
//! types, each an item under
//! string keys `pk`/`sk`, plus one index: an endpoint's failed deliveries (for replays).
//! A tenant's messages are listed from the table itself (from the partition keys they are
//! spread over), so storing a message is one write, not two.
//!
//! # Table schema
//!
//! What [`create_table`] makes and the SAM template must declare the same way:
//!
//! - `AttributeDefinitions`: `pk`, `sk`, `gsi2pk`, `gsi2sk`, all of type `S`.
//! - `KeySchema`: `pk` HASH, `sk` RANGE.
//! - `BillingMode`: `PAY_PER_REQUEST`.
//! - `GlobalSecondaryIndexes`: one, `IndexName` `gsi2`, `KeySchema` `gsi2pk` HASH and
//!   `gsi2sk` RANGE, `Projection` `ProjectionType: ALL` (a replay reads whole deliveries
//!   from the index without a second read each), sparse: only failed deliveries carry its
//!   keys, so the index costs nothing on the happy path.
//! - `TimeToLiveSpecification`: `AttributeName` `expires_at`, `Enabled` true. Only
//!   idempotency items and the portal's tokens and sessions always carry `expires_at`
//!   (epoch **seconds**); correctness never
//!   waits for TTL, as claims compare `expires_ms` themselves. With a retention set
//!   ([`DynamoStore::with_retention`]), messages, deliveries and attempts carry it too.
//!
//! # Items
//!
//! Ids are stored in their text form (`tn_…`, `msg_…`: ULIDs, so they sort by time), times
//! as numbers of milliseconds, endpoint secrets as a JSON string, optional fields by
//! leaving the attribute out.
//!
//! | record        | `pk`             | `sk`              | other attributes |
//! |---------------|------------------|-------------------|------------------|
//! | tenant        | `T#<tenant>`     | `TENANT`          | `id name parent? created_at` |
//! | sub-account   | `T#<parent>`     | `SUB#<tenant>`    | same as the sub-account's tenant item (a copy written with it in one transaction; tenants never change) |
//! | API key       | `T#<tenant>`     | `KEY#<key id>`    | `id tenant hash prefix created_at revoked_at?` |
//! | key by hash   | `KEYHASH#<hex>`  | `KEY`             | same as the API key (a copy, written and revoked with it in one transaction) |
//! | operator key  | `OPERATOR`       | `OPERATOR`        | `hash` |
//! | domain        | `T#<tenant>`     | `DOMAIN#<name>`   | `tenant name created_at` |
//! | endpoint      | `T#<tenant>`     | `EP#<endpoint>`   | `id tenant url description event_types? (L of S) domain? format secrets (JSON) status disabled_reason? disabled_at? failing_since? rate_limit? filter? (JSON) ordering? (`strict`) created_at updated_at version headers? (JSON) auth? (JSON summary) credentials? (B: the sealed credentials, see `credentials`)` (an item written before versions has none: version 1) |
//! | endpoint count| `T#<tenant>`     | `ENDPOINTS`       | `n`: the tenant's endpoints, changed in the transaction of each create and delete; made from the stored endpoints by the first such write that finds none (a table written before counts) |
//! | endpoint group| `T#<tenant>`     | `GROUP#<name>`    | `version`: moved on by each change of the group's endpoints (a Mailgun webhook) |
//! | idempotency   | `T#<tenant>#I<nn>` | `IDEM#<key>`    | `message_id expires_ms expires_at`; `nn`: SHA-256 of the key mod [`IDEMPOTENCY_SHARDS`] |
//! | message       | `T#<tenant>#S<nn>` | `MSG#<message>` | `id tenant publisher? type domain? payload (verbatim JSON text) or payload_zd1 (B: the same bytes, zstd-compressed with dictionary 1) idempotency_key? received_at targets (L of S) first_lease_until?` |
//! | page          | `T#<tenant>#S<nn>` | `MSG#<first message>` | `tenant page (B: the page's messages as one JSON array, zstd-compressed with dictionary 1) received_at first_lease_until?`; `nn`: the first message's shard |
//! | first answers | `P#<first message>` | `FIRSTS`       | `tenant firsts (B: zstd-compressed JSON, per successful first attempt of the page's messages: its place in the page, endpoint, attempt id, times, status, latency, response excerpt)` |
//! | delivery      | `M#<message>`    | `D#<endpoint>`    | `message endpoint tenant status attempts next_attempt_at? last_status_code? last_error? lease_until? updated_at log? (L of M: its first attempts)`, and when failed `gsi2pk=T#<tenant>#EP#<endpoint>#FAILED#S<nn> gsi2sk=<message id>` (`nn`: the message's shard) |
//! | attempt       | `M#<message>`    | `A#<attempt id>`  | `id message endpoint tenant number at status_code? latency_ms response error? outcome` (attempts past the first [`INLINE_ATTEMPTS`] of a delivery) |
//! | event type    | `EVENTTYPE`      | `<name>`          | `name provider description sample (verbatim JSON text) created_at` |
//! | portal login token | `PORTALTOKEN#<hex hash>` | `TOKEN` | `tenant expires_ms expires_at` |
//! | portal session | `PORTALSESSION#<hex hash>` | `SESSION` | `tenant csrf created_at expires_ms expires_at` |
//! | layout        | `LAYOUT`         | `LAYOUT`          | `message_shards idempotency_shards`: no message or binding is under `T#<tenant>` (written by [`create_table`] and at the end of [`DynamoStore::migrate_keys`]) |
//!
//! A message's shard `nn` (two digits) is the low 64 bits of its ULID mod
//! [`MESSAGE_SHARDS`]: random bits, so one tenant's writes spread over the shards and no
//! key takes more than its share. A table written before this layout has messages and
//! bindings under `T#<tenant>`; until it has a layout item, reads look there too (see
//! [`DynamoStore::migrate_keys`]).
//!
//! A message's payload is stored compressed (`payload_zd1`) when that makes it smaller: a
//! message item is billed per started KiB. The compression starts from a dictionary of
//! Mailgun `event-data` (`payload-dictionary.json`: its field names and fixed values),
//! which takes a 1.5 KB event to about 620 bytes (840 without it), so the message item
//! fits one write unit. Items written before, and small payloads, carry the text in
//! `payload`; the attribute present tells which, and a new dictionary would get a new
//! attribute, the old one still read with its own. Either way the payload read back is
//! the verbatim text that was published.
//!
//! A page holds the messages of one publish (ingest's [`crate::task::PageTask`]: up to
//! sixteen ids of one [`MessageId::page`], one owner) in one item, so ten events cost one
//! write of a few KiB where they cost ten; a message of a page is found from its id, whose
//! low four bits are its place in the page. Its successful first attempts are the page's
//! first answers, one more item written once they are all made
//! ([`DeliveryStore::record_page_firsts`]); every read of a delivery or an attempt looks
//! there too, and a claim of a first attempt recorded there is refused.
//!
//! A message's `first_lease_until` is the lease on the first attempts of its deliveries
//! that [`MessageStore::insert_message_leased`] writes with it: the worker whose
//! conditional put stored the message makes those attempts without claiming each
//! delivery, and another copy of the same event waits for the lease to end.
//!
//! An attempt is written with the state it produced, in one conditional `UpdateItem` of
//! the delivery that appends it to the delivery's `log`; past [`INLINE_ATTEMPTS`] (so
//! the item stays small) the attempt is an `A#` item written in one transaction with the
//! delivery instead. Either way the log never holds an attempt that the delivery's count
//! does not include.
//!
//! Reads of single items are strongly consistent. Message listings read the tenant's
//! shards, failed-delivery listings an index, both eventually consistent: a message
//! may show up in listings a moment after it was stored, a delivery a moment after it
//! failed. A listing page queries every shard for a few messages at a time, newest first,
//! and merges them by id; its cursor is the last id, whichever shard it came from.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::{BuildError, DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, ScalarAttributeType,
    TimeToLiveSpecification, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use serde_json::value::RawValue;

use super::sdk_error;
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
    DeliveryStore, EndpointStore, EventTypeStore, FirstAttempts, Inserted, MessageStore,
    PortalStore, TenantStore, Written, MAX_PAGE,
};

/// The table's partition key attribute.
pub const PK: &str = "pk";
/// The table's sort key attribute.
pub const SK: &str = "sk";
/// The sparse index listing an endpoint's failed deliveries by message.
pub const GSI2: &str = "gsi2";
pub const GSI2_PK: &str = "gsi2pk";
pub const GSI2_SK: &str = "gsi2sk";
/// The attribute DynamoDB's TTL reads: epoch seconds.
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// DynamoDB's limit on the items of one `TransactWriteItems` (moto enforces it too).
const MAX_TRANSACTION_ITEMS: usize = 100;
/// Rounds a domain delete makes before giving up on endpoints that keep changing: enough
/// for 98 times this many endpoints.
const MAX_DOMAIN_ROUNDS: usize = 200;
/// How long [`create_table`] waits for a new table to become active.
const TABLE_CREATION_PATIENCE: Duration = Duration::from_secs(300);

const TENANT_SK: &str = "TENANT";
const SUB_ACCOUNT_PREFIX: &str = "SUB#";
/// The one partition of the operator's event types: few, and listed whole.
const EVENT_TYPE_PK: &str = "EVENTTYPE";
const KEY_PREFIX: &str = "KEY#";
const KEY_LOOKUP_SK: &str = "KEY";
const OPERATOR: &str = "OPERATOR";
const DOMAIN_PREFIX: &str = "DOMAIN#";
const ENDPOINT_PREFIX: &str = "EP#";
/// The item counting a tenant's endpoints, for the limit on them.
const ENDPOINT_COUNT_SK: &str = "ENDPOINTS";
const GROUP_PREFIX: &str = "GROUP#";
const IDEMPOTENCY_PREFIX: &str = "IDEM#";
const MESSAGE_PREFIX: &str = "MSG#";
/// How many partition keys a tenant's messages are spread over. A message of a 1.5 KB
/// payload is a 2 KB item, 2 write units (3 from a 2 KB payload): at 10,000 messages a
/// second from one tenant, 64 keys take at most about 200 messages, 600 WRU/s each (the
/// random shards are not exactly even), against DynamoDB's 1,000 per key; 32 would put the
/// busiest key over it with 2 KB payloads. Every listing page queries each key, so more
/// would make pages dearer. Changing it moves messages between keys: it is part of the
/// layout.
pub const MESSAGE_SHARDS: u64 = 64;
/// How many partition keys a tenant's idempotency bindings are spread over (1 WRU each,
/// under keys of their own, so they add nothing to a message shard's load). Bindings are
/// only ever read by key, so more shards cost nothing.
pub const IDEMPOTENCY_SHARDS: u64 = 32;
/// The item recording that [`DynamoStore::migrate_keys`] finished: from then on no
/// message or binding is under its tenant's own partition key.
pub const LAYOUT_PK: &str = "LAYOUT";
pub const LAYOUT_SK: &str = "LAYOUT";
/// How long a store trusts what it last read of the layout item.
const LAYOUT_PATIENCE: Duration = Duration::from_secs(60);
const DELIVERY_PREFIX: &str = "D#";
const ATTEMPT_PREFIX: &str = "A#";
/// The message attribute holding its payload compressed with [`PAYLOAD_DICTIONARY`];
/// `payload` holds it as text.
const PAYLOAD_ZSTD: &str = "payload_zd1";
/// zstd's raw-content dictionary for payloads: never to change, as stored payloads need
/// it to be read.
const PAYLOAD_DICTIONARY: &[u8] = include_bytes!("payload-dictionary.json");
/// zstd's default level: on payloads of a few KB, higher levels gain a few bytes for
/// several times the time.
const PAYLOAD_ZSTD_LEVEL: i32 = 3;
/// The message attribute holding the lease on its first attempts.
const FIRST_LEASE: &str = "first_lease_until";
/// The delivery attribute holding its first attempts.
const LOG: &str = "log";
/// How many attempts a delivery item carries in its `log`; later ones are items of their
/// own. Eight is the default schedule's length, so with it every attempt is inline; the
/// cap keeps the item (written again at every attempt, and billed by its size) small.
pub const INLINE_ATTEMPTS: u32 = 8;

type Item = HashMap<String, AttributeValue>;

/// [`crate::ports::Store`] on one DynamoDB table laid out as the module doc describes.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// How long messages, deliveries and attempts are kept (DynamoDB TTL); `None`: ever.
    retention: Option<Duration>,
    /// Whether the table may still hold items of the unsharded layout, and when that was
    /// read; shared by the clones of a store.
    layout: Arc<Mutex<Option<(bool, Instant)>>>,
}

impl DynamoStore {
    pub fn new(client: Client, table: String) -> Self {
        DynamoStore {
            client,
            table,
            retention: None,
            layout: Arc::default(),
        }
    }

    /// Lets DynamoDB's TTL delete messages, deliveries and attempts this long after their
    /// time (received, last changed, made).
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Adds the TTL attribute to a log item when a retention is set.
    fn expiring(&self, mut item: Item, since_ms: Millis) -> Item {
        if let Some(keep) = self.retention {
            let until = since_ms.saturating_add(keep.as_millis().min(i64::MAX as u128) as i64);
            item.insert(TTL_ATTRIBUTE.into(), n(epoch_seconds_ceil(until)));
        }
        item
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}

/// Creates the table as the module doc describes, waits until it is active and turns on
/// TTL. For tests and local end-to-end runs; deployments get the table from the template.
pub async fn create_table(client: &Client, name: &str) -> Result<()> {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(build_error)
    };
    let key = |name: &str, key_type: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .map_err(build_error)
    };
    let index = |name: &str, pk: &str, sk: &str| {
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .key_schema(key(pk, KeyType::Hash)?)
            .key_schema(key(sk, KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .map_err(build_error)
    };
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute(PK)?)
        .attribute_definitions(attribute(SK)?)
        .attribute_definitions(attribute(GSI2_PK)?)
        .attribute_definitions(attribute(GSI2_SK)?)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .global_secondary_indexes(index(GSI2, GSI2_PK, GSI2_SK)?)
        .send()
        .await
        .map_err(|e| sdk_error("create table", e))?;
    client
        .wait_until_table_exists()
        .table_name(name)
        .wait(TABLE_CREATION_PATIENCE)
        .await
        .map_err(|e| Error::backend("wait for the table", DisplayErrorContext(e).to_string()))?;
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_ATTRIBUTE)
                .build()
                .map_err(build_error)?,
        )
        .send()
        .await
        .map_err(|e| sdk_error("enable table TTL", e))?;
    // A new table holds nothing of the unsharded layout: no migration to wait for.
    client
        .put_item()
        .table_name(name)
        .set_item(Some(layout_item()))
        .send()
        .await
        .map_err(|e| sdk_error("record the table layout", e))?;
    Ok(())
}

/// The item saying a table holds messages and bindings under sharded keys only.
fn layout_item() -> Item {
    item(
        LAYOUT_PK.to_owned(),
        LAYOUT_SK,
        [
            ("message_shards", Some(n(MESSAGE_SHARDS))),
            ("idempotency_shards", Some(n(IDEMPOTENCY_SHARDS))),
        ],
    )
}

// ---- keys and attribute encoding --------------------------------------------------------

fn tenant_pk(tenant: TenantId) -> String {
    format!("T#{tenant}")
}

fn message_pk(message: MessageId) -> String {
    format!("M#{message}")
}

/// The shard of a message: the low bits of its ULID, which are random (or, for ids minted
/// in one millisecond, consecutive), so a tenant's messages fall evenly on the shards.
fn message_shard(id: MessageId) -> u64 {
    (id.ulid().0 as u64) % MESSAGE_SHARDS
}

/// One of the partition keys a tenant's messages are spread over.
fn message_shard_pk(tenant: TenantId, shard: u64) -> String {
    format!("T#{tenant}#S{shard:02}")
}

/// The partition key of a message in the sharded layout.
fn message_log_pk(tenant: TenantId, id: MessageId) -> String {
    message_shard_pk(tenant, message_shard(id))
}

/// The partition key of an idempotency binding: its shard is a hash of the key (stable
/// across builds and platforms, unlike std's hasher), so one key always maps to one item.
fn idempotency_pk(tenant: TenantId, key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let head = u64::from_be_bytes(digest[..8].try_into().expect("eight bytes"));
    format!("T#{tenant}#I{:02}", head % IDEMPOTENCY_SHARDS)
}

fn idempotency_sk(key: &str) -> String {
    format!("{IDEMPOTENCY_PREFIX}{key}")
}

/// The `pk` and `sk` of a message's item in the sharded layout.
pub fn message_key(tenant: TenantId, id: MessageId) -> (String, String) {
    (message_log_pk(tenant, id), message_sk(id))
}

/// The `pk` and `sk` of an idempotency binding's item in the sharded layout.
pub fn idempotency_key(tenant: TenantId, key: &str) -> (String, String) {
    (idempotency_pk(tenant, key), idempotency_sk(key))
}

fn key_lookup_pk(hash: &KeyHash) -> String {
    format!("KEYHASH#{}", hash.as_hex())
}

fn key(pk: String, sk: impl Into<String>) -> Item {
    HashMap::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl fmt::Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn string_list<S: ToString>(values: &[S]) -> AttributeValue {
    // A list (L) rather than a string set: sets cannot be empty and have no order.
    AttributeValue::L(values.iter().map(|v| s(v.to_string())).collect())
}

/// Builds an item from its key and attributes, leaving out the absent optional ones.
fn item(
    pk: String,
    sk: impl Into<String>,
    attributes: impl IntoIterator<Item = (&'static str, Option<AttributeValue>)>,
) -> Item {
    let mut item = key(pk, sk);
    item.extend(
        attributes
            .into_iter()
            .filter_map(|(name, value)| Some((name.to_owned(), value?))),
    );
    item
}

fn build_error(e: BuildError) -> Error {
    Error::backend("build a DynamoDB request", e)
}

fn to_json(what: &'static str, value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::backend(what, e))
}

/// Reads typed attributes of one item; a missing or mistyped required one is a backend
/// error naming the record and the attribute.
struct Fields<'a> {
    item: &'a Item,
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn new(item: &'a Item, what: &'static str) -> Self {
        Fields { item, what }
    }

    fn bad(&self, name: &str) -> Error {
        Error::backend(
            self.what,
            format!("attribute {name:?} is missing or malformed"),
        )
    }

    fn get(&self, name: &str) -> Option<&'a AttributeValue> {
        self.item
            .get(name)
            .filter(|v| !matches!(v, AttributeValue::Null(_)))
    }

    fn opt_s(&self, name: &str) -> Result<Option<&'a str>> {
        match self.get(name) {
            None => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v)),
            Some(_) => Err(self.bad(name)),
        }
    }

    fn opt_b(&self, name: &str) -> Result<Option<&'a [u8]>> {
        match self.get(name) {
            None => Ok(None),
            Some(AttributeValue::B(v)) => Ok(Some(v.as_ref())),
            Some(_) => Err(self.bad(name)),
        }
    }

    fn s(&self, name: &str) -> Result<&'a str> {
        self.opt_s(name)?.ok_or_else(|| self.bad(name))
    }

    fn opt_string(&self, name: &str) -> Result<Option<String>> {
        Ok(self.opt_s(name)?.map(str::to_owned))
    }

    fn string(&self, name: &str) -> Result<String> {
        self.s(name).map(str::to_owned)
    }

    fn opt_n<T: FromStr>(&self, name: &str) -> Result<Option<T>> {
        match self.get(name) {
            None => Ok(None),
            Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| self.bad(name)),
            Some(_) => Err(self.bad(name)),
        }
    }

    fn n<T: FromStr>(&self, name: &str) -> Result<T> {
        self.opt_n(name)?.ok_or_else(|| self.bad(name))
    }

    /// A string attribute holding the text form of a value (ids above all).
    fn parsed<T: FromStr>(&self, name: &str) -> Result<T> {
        self.s(name)?.parse().map_err(|_| self.bad(name))
    }

    fn opt_parsed<T: FromStr>(&self, name: &str) -> Result<Option<T>> {
        self.opt_s(name)?
            .map(|v| v.parse().map_err(|_| self.bad(name)))
            .transpose()
    }

    /// A string attribute holding one of the `as_str` names of an enum.
    fn named<T>(&self, name: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
        parse(self.s(name)?).ok_or_else(|| self.bad(name))
    }

    fn opt_list(&self, name: &str) -> Result<Option<Vec<&'a str>>> {
        match self.get(name) {
            None => Ok(None),
            Some(AttributeValue::L(values)) => values
                .iter()
                .map(|v| v.as_s().map(String::as_str).map_err(|_| self.bad(name)))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(_) => Err(self.bad(name)),
        }
    }
}

// ---- records ----------------------------------------------------------------------------

fn tenant_attributes(t: &Tenant) -> [(&'static str, Option<AttributeValue>); 4] {
    [
        ("id", Some(s(t.id.to_string()))),
        ("name", Some(s(&t.name))),
        ("parent", t.parent.map(|p| s(p.to_string()))),
        ("created_at", Some(n(t.created_at))),
    ]
}

fn tenant_item(t: &Tenant) -> Item {
    item(tenant_pk(t.id), TENANT_SK, tenant_attributes(t))
}

/// The copy of a sub-account under its parent, which lists them with one query.
fn sub_account_item(t: &Tenant, parent: TenantId) -> Item {
    item(
        tenant_pk(parent),
        format!("{SUB_ACCOUNT_PREFIX}{}", t.id),
        tenant_attributes(t),
    )
}

fn decode_tenant(item: &Item) -> Result<Tenant> {
    let f = Fields::new(item, "decode tenant");
    Ok(Tenant {
        id: f.parsed("id")?,
        name: f.string("name")?,
        parent: f.opt_parsed("parent")?,
        created_at: f.n("created_at")?,
    })
}

fn key_attributes(k: &ApiKeyRecord) -> [(&'static str, Option<AttributeValue>); 6] {
    [
        ("id", Some(s(k.id.to_string()))),
        ("tenant", Some(s(k.tenant.to_string()))),
        ("hash", Some(s(k.hash.as_hex()))),
        ("prefix", Some(s(&k.prefix))),
        ("created_at", Some(n(k.created_at))),
        ("revoked_at", k.revoked_at.map(n)),
    ]
}

fn key_sk(id: ApiKeyId) -> String {
    format!("{KEY_PREFIX}{id}")
}

fn decode_key(item: &Item) -> Result<ApiKeyRecord> {
    let f = Fields::new(item, "decode api key");
    Ok(ApiKeyRecord {
        id: f.parsed("id")?,
        tenant: f.parsed("tenant")?,
        hash: KeyHash::from_hex(f.string("hash")?),
        prefix: f.string("prefix")?,
        created_at: f.n("created_at")?,
        revoked_at: f.opt_n("revoked_at")?,
    })
}

fn domain_sk(name: &str) -> String {
    format!("{DOMAIN_PREFIX}{name}")
}

fn domain_item(d: &Domain) -> Item {
    item(
        tenant_pk(d.tenant),
        domain_sk(&d.name),
        [
            ("tenant", Some(s(d.tenant.to_string()))),
            ("name", Some(s(&d.name))),
            ("created_at", Some(n(d.created_at))),
        ],
    )
}

fn decode_domain(item: &Item) -> Result<Domain> {
    let f = Fields::new(item, "decode domain");
    Ok(Domain {
        tenant: f.parsed("tenant")?,
        name: f.string("name")?,
        created_at: f.n("created_at")?,
    })
}

fn endpoint_sk(id: EndpointId) -> String {
    format!("{ENDPOINT_PREFIX}{id}")
}

fn endpoint_item(e: &Endpoint) -> Result<Item> {
    let secrets = to_json("encode endpoint secrets", &e.secrets)?;
    let filter = e
        .filter
        .as_ref()
        .map(|f| to_json("encode endpoint filter", f))
        .transpose()?;
    let headers = (!e.headers.is_empty())
        .then(|| to_json("encode endpoint headers", &e.headers))
        .transpose()?;
    let auth = e
        .auth
        .as_ref()
        .map(|a| to_json("encode endpoint auth", &a.summary))
        .transpose()?;
    Ok(item(
        tenant_pk(e.tenant),
        endpoint_sk(e.id),
        [
            ("id", Some(s(e.id.to_string()))),
            ("tenant", Some(s(e.tenant.to_string()))),
            ("url", Some(s(&e.url))),
            ("description", Some(s(&e.description))),
            ("event_types", e.event_types.as_deref().map(string_list)),
            ("domain", e.domain.as_deref().map(s)),
            ("format", Some(s(e.format.as_str()))),
            ("secrets", Some(s(secrets))),
            ("status", Some(s(e.status.as_str()))),
            ("disabled_reason", e.disabled_reason.as_deref().map(s)),
            ("disabled_at", e.disabled_at.map(n)),
            ("failing_since", e.failing_since.map(n)),
            ("rate_limit", e.rate_limit.map(n)),
            ("filter", filter.map(s)),
            ("created_at", Some(n(e.created_at))),
            ("updated_at", Some(n(e.updated_at))),
            ("version", Some(n(e.version))),
            ("headers", headers.map(s)),
            ("auth", auth.map(s)),
            (
                "credentials",
                e.auth
                    .as_ref()
                    .map(|a| AttributeValue::B(Blob::new(a.sealed.clone()))),
            ),
            // Written only when strict: an item without it is unordered, as items written
            // before ordering existed are.
            ("ordering", e.is_ordered().then(|| s(e.ordering.as_str()))),
        ],
    ))
}

/// The condition that an item's `version` is `expected` (`#version` and `:version` bound
/// by the caller); items written before versions count as version 1.
fn version_is(expected: u64) -> &'static str {
    if expected == 1 {
        "(attribute_not_exists(#version) OR #version = :version)"
    } else {
        "#version = :version"
    }
}

fn decode_endpoint(item: &Item) -> Result<Endpoint> {
    let f = Fields::new(item, "decode endpoint");
    Ok(Endpoint {
        id: f.parsed("id")?,
        tenant: f.parsed("tenant")?,
        url: f.string("url")?,
        description: f.string("description")?,
        event_types: f
            .opt_list("event_types")?
            .map(|types| types.into_iter().map(str::to_owned).collect()),
        domain: f.opt_string("domain")?,
        format: f.named("format", BodyFormat::parse)?,
        secrets: serde_json::from_str(f.s("secrets")?)
            .map_err(|e| Error::backend("decode endpoint secrets", e))?,
        status: f.named("status", EndpointStatus::parse)?,
        disabled_reason: f.opt_string("disabled_reason")?,
        disabled_at: f.opt_n("disabled_at")?,
        failing_since: f.opt_n("failing_since")?,
        rate_limit: f.opt_n("rate_limit")?,
        filter: f
            .opt_s("filter")?
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| Error::backend("decode endpoint filter", e))?,
        created_at: f.n("created_at")?,
        updated_at: f.n("updated_at")?,
        version: f.opt_n("version")?.unwrap_or(1),
        headers: f
            .opt_s("headers")?
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| Error::backend("decode endpoint headers", e))?
            .unwrap_or_default(),
        auth: match (f.opt_s("auth")?, f.opt_b("credentials")?) {
            (Some(summary), Some(sealed)) => Some(SealedAuth {
                summary: serde_json::from_str(summary)
                    .map_err(|e| Error::backend("decode endpoint auth", e))?,
                sealed: sealed.to_vec(),
            }),
            _ => None,
        },
        ordering: match f.opt_s("ordering")? {
            Some(_) => f.named("ordering", Ordering::parse)?,
            None => Ordering::None,
        },
    })
}

fn message_sk(id: MessageId) -> String {
    format!("{MESSAGE_PREFIX}{id}")
}

fn message_item(m: &Message) -> Item {
    item(
        message_log_pk(m.tenant, m.id),
        message_sk(m.id),
        [
            ("id", Some(s(m.id.to_string()))),
            ("tenant", Some(s(m.tenant.to_string()))),
            ("publisher", m.publisher.map(|p| s(p.to_string()))),
            ("type", Some(s(&m.event_type))),
            ("domain", m.domain.as_deref().map(s)),
            payload_attribute(m.payload.get()),
            ("idempotency_key", m.idempotency_key.as_deref().map(s)),
            ("received_at", Some(n(m.received_at))),
            ("targets", Some(string_list(&m.targets))),
        ],
    )
}

/// The payload as stored: compressed when that is smaller (the name and the bytes are
/// what the write is billed on), else its text. Verbatim either way: signatures are
/// computed over these exact bytes.
fn payload_attribute(text: &str) -> (&'static str, Option<AttributeValue>) {
    match pack(text.as_bytes()) {
        Ok(packed) if PAYLOAD_ZSTD.len() + packed.len() < "payload".len() + text.len() => {
            (PAYLOAD_ZSTD, Some(AttributeValue::B(Blob::new(packed))))
        }
        _ => ("payload", Some(s(text))),
    }
}

/// `bytes` compressed with the payload dictionary (a payload, or a page's messages).
fn pack(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::bulk::Compressor::with_dictionary(PAYLOAD_ZSTD_LEVEL, PAYLOAD_DICTIONARY)
        .and_then(|mut c| c.compress(bytes))
}

/// What [`pack`] compressed; `what` names the record in the error.
fn unpack(packed: &[u8], what: &'static str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    zstd::stream::read::Decoder::with_dictionary(packed, PAYLOAD_DICTIONARY)
        .and_then(|mut d| std::io::Read::read_to_end(&mut d, &mut bytes))
        .map_err(|e| Error::backend(what, e))?;
    Ok(bytes)
}

fn decode_payload(f: &Fields<'_>) -> Result<Box<RawValue>> {
    let text = match f.get(PAYLOAD_ZSTD) {
        Some(value) => {
            let packed = value.as_b().map_err(|_| f.bad(PAYLOAD_ZSTD))?;
            let what = "decompress message payload";
            String::from_utf8(unpack(packed.as_ref(), what)?)
                .map_err(|e| Error::backend(what, e))?
        }
        None => f.string("payload")?,
    };
    RawValue::from_string(text).map_err(|e| Error::backend("decode message payload", e))
}

/// A sort key past every message's: `MSG#msg_` and then a character above the ULID
/// alphabet.
fn message_range_end() -> String {
    format!("{MESSAGE_PREFIX}{}_~", MessageId::PREFIX)
}

fn decode_message(item: &Item) -> Result<Message> {
    let f = Fields::new(item, "decode message");
    let targets = f
        .opt_list("targets")?
        .unwrap_or_default()
        .into_iter()
        .map(|t| t.parse().map_err(|_| f.bad("targets")))
        .collect::<Result<Vec<EndpointId>>>()?;
    Ok(Message {
        id: f.parsed("id")?,
        tenant: f.parsed("tenant")?,
        publisher: f.opt_parsed("publisher")?,
        domain: f.opt_string("domain")?,
        event_type: f.string("type")?,
        payload: decode_payload(&f)?,
        idempotency_key: f.opt_string("idempotency_key")?,
        received_at: f.n("received_at")?,
        targets,
    })
}

// ---- pages: the messages of one publish in one item, and their first results ----------

/// The attribute of a page item holding its messages, compressed together.
const PAGE: &str = "page";
/// The sort key of a page's first results, under `P#<page>`.
const FIRSTS_SK: &str = "FIRSTS";
/// The attribute of those results, compressed.
const FIRSTS: &str = "firsts";
/// Past this many compressed bytes the first results of a page are recorded delivery by
/// delivery instead (an item holds at most 400 KB).
const MAX_FIRSTS_BYTES: usize = 256 * 1024;

/// One message of a page, as its item stores it: the tenant and the lease are the item's.
#[derive(serde::Serialize, serde::Deserialize)]
struct PagedMessage {
    id: MessageId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    publisher: Option<TenantId>,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    domain: Option<String>,
    received_at: Millis,
    targets: Vec<EndpointId>,
    payload: Box<RawValue>,
}

/// A page item: the messages (ids of one [`MessageId::page`], one tenant, in order) under
/// the first one's key, so that the log lists them and a message is found from its id.
/// Compressed together with the payload dictionary: events of one publish share most of
/// their text (the bench's ten 1.5 KB events take 1–2 KB, one takes 0.6).
fn page_item(messages: &[Message]) -> Result<Item> {
    let first = messages
        .first()
        .ok_or_else(|| Error::backend("insert page", "a page without messages"))?;
    let stored: Vec<PagedMessage> = messages
        .iter()
        .map(|m| PagedMessage {
            id: m.id,
            publisher: m.publisher,
            event_type: m.event_type.clone(),
            domain: m.domain.clone(),
            received_at: m.received_at,
            targets: m.targets.clone(),
            payload: m.payload.clone(),
        })
        .collect();
    let json = to_json("encode page", &stored)?;
    let packed = pack(json.as_bytes()).map_err(|e| Error::backend("compress page", e))?;
    Ok(item(
        message_log_pk(first.tenant, first.id),
        message_sk(first.id),
        [
            ("tenant", Some(s(first.tenant.to_string()))),
            (PAGE, Some(AttributeValue::B(Blob::new(packed)))),
            ("received_at", Some(n(first.received_at))),
        ],
    ))
}

/// Who may make the first attempts of a stored message's (or page's) deliveries, as its
/// lease stands at `now`.
fn first_attempts_of(stored: &Item, now: Millis) -> Result<FirstAttempts> {
    let held = Fields::new(stored, "decode message")
        .opt_n::<Millis>(FIRST_LEASE)?
        .filter(|until| *until > now);
    Ok(held.map_or(FirstAttempts::Open, FirstAttempts::HeldUntil))
}

/// The messages a message item holds: itself, or a page's, in id order.
fn decode_messages(item: &Item) -> Result<Vec<Message>> {
    let f = Fields::new(item, "decode page");
    let Some(packed) = f.opt_b(PAGE)? else {
        return Ok(vec![decode_message(item)?]);
    };
    let tenant: TenantId = f.parsed("tenant")?;
    let json = unpack(packed, "decompress page")?;
    let stored: Vec<PagedMessage> =
        serde_json::from_slice(&json).map_err(|e| Error::backend("decode page", e))?;
    Ok(stored
        .into_iter()
        .map(|m| Message {
            id: m.id,
            tenant,
            publisher: m.publisher,
            domain: m.domain,
            event_type: m.event_type,
            payload: m.payload,
            idempotency_key: None,
            received_at: m.received_at,
            targets: m.targets,
        })
        .collect())
}

/// The messages of a message item, newest first (a listing's order).
fn decode_messages_newest_first(item: &Item) -> Result<Vec<Message>> {
    let mut messages = decode_messages(item)?;
    messages.reverse();
    Ok(messages)
}

/// The partition key of a page's first results.
fn firsts_pk(page: MessageId) -> String {
    format!("P#{page}")
}

/// One successful first attempt of a page's message, as its page's results store it.
#[derive(serde::Serialize, serde::Deserialize)]
struct First {
    /// The message's place in its page.
    i: usize,
    e: EndpointId,
    id: crate::ids::AttemptId,
    at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    ms: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    r: String,
    /// When the delivery settled.
    u: Millis,
}

impl First {
    fn of(delivery: &Delivery, attempt: &Attempt) -> Self {
        First {
            i: attempt.message.page_index(),
            e: attempt.endpoint,
            id: attempt.id,
            at: attempt.at,
            code: attempt.status_code,
            ms: attempt.latency_ms,
            r: attempt.response.clone(),
            u: delivery.updated_at,
        }
    }

    fn delivery(&self, message: MessageId, tenant: TenantId) -> Delivery {
        Delivery {
            message,
            endpoint: self.e,
            tenant,
            status: DeliveryStatus::Succeeded,
            attempts: 1,
            next_attempt_at: None,
            last_status_code: self.code,
            last_error: None,
            lease_until: None,
            updated_at: self.u,
        }
    }

    fn attempt(&self, message: MessageId, tenant: TenantId) -> Attempt {
        Attempt {
            id: self.id,
            message,
            endpoint: self.e,
            tenant,
            number: 1,
            at: self.at,
            status_code: self.code,
            latency_ms: self.ms,
            response: self.r.clone(),
            error: None,
            outcome: AttemptOutcome::Succeeded,
        }
    }
}

/// The item of a page's first results; `None` when they are too many for one item.
fn firsts_item(page: MessageId, tenant: TenantId, firsts: &[First]) -> Result<Option<Item>> {
    let json = to_json("encode first results", &firsts)?;
    let packed = zstd::bulk::compress(json.as_bytes(), PAYLOAD_ZSTD_LEVEL)
        .map_err(|e| Error::backend("compress first results", e))?;
    if packed.len() > MAX_FIRSTS_BYTES {
        return Ok(None);
    }
    Ok(Some(item(
        firsts_pk(page),
        FIRSTS_SK,
        [
            ("tenant", Some(s(tenant.to_string()))),
            (FIRSTS, Some(AttributeValue::B(Blob::new(packed)))),
        ],
    )))
}

/// A page's first results, with their tenant.
fn decode_firsts(item: &Item) -> Result<(TenantId, Vec<First>)> {
    let f = Fields::new(item, "decode first results");
    let tenant = f.parsed("tenant")?;
    let packed = f.opt_b(FIRSTS)?.ok_or_else(|| f.bad(FIRSTS))?;
    let json = zstd::stream::decode_all(packed)
        .map_err(|e| Error::backend("decompress first results", e))?;
    let firsts =
        serde_json::from_slice(&json).map_err(|e| Error::backend("decode first results", e))?;
    Ok((tenant, firsts))
}

fn delivery_sk(endpoint: EndpointId) -> String {
    format!("{DELIVERY_PREFIX}{endpoint}")
}

/// The index partition holding a tenant's failed deliveries to one endpoint before the
/// sharded layout.
fn unsharded_failed_deliveries_of(tenant: TenantId, endpoint: EndpointId) -> String {
    format!("T#{tenant}#EP#{endpoint}#FAILED")
}

/// One of the index partitions a tenant's failed deliveries to one endpoint are spread
/// over: an endpoint that fails every delivery of a busy tenant would otherwise put all
/// of them on one index key.
fn failed_shard_pk(tenant: TenantId, endpoint: EndpointId, shard: u64) -> String {
    format!("T#{tenant}#EP#{endpoint}#FAILED#S{shard:02}")
}

/// The index partition of a failed delivery: its message's shard.
fn failed_deliveries_of(tenant: TenantId, endpoint: EndpointId, message: MessageId) -> String {
    failed_shard_pk(tenant, endpoint, message_shard(message))
}

fn delivery_item(d: &Delivery) -> Item {
    let failed = d.status == DeliveryStatus::Failed;
    item(
        message_pk(d.message),
        delivery_sk(d.endpoint),
        [
            ("message", Some(s(d.message.to_string()))),
            ("endpoint", Some(s(d.endpoint.to_string()))),
            ("tenant", Some(s(d.tenant.to_string()))),
            ("status", Some(s(d.status.as_str()))),
            ("attempts", Some(n(d.attempts))),
            ("next_attempt_at", d.next_attempt_at.map(n)),
            ("last_status_code", d.last_status_code.map(n)),
            ("last_error", d.last_error.as_deref().map(s)),
            ("lease_until", d.lease_until.map(n)),
            ("updated_at", Some(n(d.updated_at))),
            // Only failed deliveries are in the replay index.
            (
                GSI2_PK,
                failed.then(|| s(failed_deliveries_of(d.tenant, d.endpoint, d.message))),
            ),
            (GSI2_SK, failed.then(|| s(d.message.to_string()))),
        ],
    )
}

/// The attributes a delivery item carries only in some states; a write of the whole state
/// removes those the new state leaves out.
const OPTIONAL_DELIVERY_ATTRIBUTES: [&str; 6] = [
    "next_attempt_at",
    "last_status_code",
    "last_error",
    "lease_until",
    GSI2_PK,
    GSI2_SK,
];

/// An `UpdateItem` of a delivery's record, for a request or a transaction step.
struct DeliveryWrite {
    key: Item,
    update: String,
    condition: &'static str,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

/// A failed delivery of the replay index, as a listing that merges index keys reads it.
fn decode_deliveries(item: &Item) -> Result<Vec<Delivery>> {
    Ok(vec![decode_delivery(item)?])
}

fn decode_delivery(item: &Item) -> Result<Delivery> {
    let f = Fields::new(item, "decode delivery");
    Ok(Delivery {
        message: f.parsed("message")?,
        endpoint: f.parsed("endpoint")?,
        tenant: f.parsed("tenant")?,
        status: f.named("status", DeliveryStatus::parse)?,
        attempts: f.n("attempts")?,
        next_attempt_at: f.opt_n("next_attempt_at")?,
        last_status_code: f.opt_n("last_status_code")?,
        last_error: f.opt_string("last_error")?,
        lease_until: f.opt_n("lease_until")?,
        updated_at: f.n("updated_at")?,
    })
}

/// The attributes of an attempt that its delivery does not already tell.
fn attempt_attributes(a: &Attempt) -> [(&'static str, Option<AttributeValue>); 8] {
    [
        ("id", Some(s(a.id.to_string()))),
        ("number", Some(n(a.number))),
        ("at", Some(n(a.at))),
        ("status_code", a.status_code.map(n)),
        ("latency_ms", Some(n(a.latency_ms))),
        ("response", Some(s(&a.response))),
        ("error", a.error.as_deref().map(s)),
        ("outcome", Some(s(a.outcome.as_str()))),
    ]
}

/// Whose attempt it is: the attributes an attempt item has and a log entry leaves to
/// its delivery.
const ATTEMPT_OWNER: [&str; 3] = ["message", "endpoint", "tenant"];

fn attempt_item(a: &Attempt) -> Item {
    item(
        message_pk(a.message),
        format!("{ATTEMPT_PREFIX}{}", a.id),
        [
            ("message", Some(s(a.message.to_string()))),
            ("endpoint", Some(s(a.endpoint.to_string()))),
            ("tenant", Some(s(a.tenant.to_string()))),
        ]
        .into_iter()
        .chain(attempt_attributes(a)),
    )
}

/// An attempt as an entry of its delivery's `log`.
fn log_entry(a: &Attempt) -> AttributeValue {
    AttributeValue::M(
        attempt_attributes(a)
            .into_iter()
            .filter_map(|(name, value)| Some((name.to_owned(), value?)))
            .collect(),
    )
}

/// The attempts in a delivery item's `log`, each completed with the delivery's ids.
fn decode_log(delivery: &Item) -> Result<Vec<Attempt>> {
    let f = Fields::new(delivery, "decode delivery log");
    let entries = match f.get(LOG) {
        None => return Ok(Vec::new()),
        Some(AttributeValue::L(entries)) => entries,
        Some(_) => return Err(f.bad(LOG)),
    };
    entries
        .iter()
        .map(|entry| {
            let AttributeValue::M(fields) = entry else {
                return Err(f.bad(LOG));
            };
            let mut attempt = fields.clone();
            for name in ATTEMPT_OWNER {
                attempt.insert(
                    name.to_owned(),
                    f.get(name).ok_or_else(|| f.bad(name))?.clone(),
                );
            }
            decode_attempt(&attempt)
        })
        .collect()
}

fn decode_attempt(item: &Item) -> Result<Attempt> {
    let f = Fields::new(item, "decode attempt");
    Ok(Attempt {
        id: f.parsed("id")?,
        message: f.parsed("message")?,
        endpoint: f.parsed("endpoint")?,
        tenant: f.parsed("tenant")?,
        number: f.n("number")?,
        at: f.n("at")?,
        status_code: f.opt_n("status_code")?,
        latency_ms: f.n("latency_ms")?,
        response: f.string("response")?,
        error: f.opt_string("error")?,
        outcome: f.named("outcome", AttemptOutcome::parse)?,
    })
}

fn event_type_item(d: &CustomEventType) -> Item {
    item(
        EVENT_TYPE_PK.to_owned(),
        &d.name,
        [
            ("name", Some(s(&d.name))),
            ("provider", Some(s(&d.provider))),
            ("description", Some(s(&d.description))),
            // Verbatim, as the operator sent it.
            ("sample", Some(s(d.sample.get()))),
            ("created_at", Some(n(d.created_at))),
        ],
    )
}

fn decode_event_type(item: &Item) -> Result<CustomEventType> {
    let f = Fields::new(item, "decode event type");
    Ok(CustomEventType {
        name: f.string("name")?,
        provider: f.string("provider")?,
        description: f.string("description")?,
        sample: RawValue::from_string(f.string("sample")?)
            .map_err(|e| Error::backend("decode event type sample", e))?,
        created_at: f.n("created_at")?,
    })
}

// ---- requests ---------------------------------------------------------------------------

/// The service errors that say a condition expression was false.
trait ConditionFailure {
    fn is_condition_failure(&self) -> bool;
}

impl ConditionFailure for PutItemError {
    fn is_condition_failure(&self) -> bool {
        self.is_conditional_check_failed_exception()
    }
}

impl ConditionFailure for UpdateItemError {
    fn is_condition_failure(&self) -> bool {
        self.is_conditional_check_failed_exception()
    }
}

impl ConditionFailure for DeleteItemError {
    fn is_condition_failure(&self) -> bool {
        self.is_conditional_check_failed_exception()
    }
}

/// Whether a conditional write happened: `false` when its condition was false, an error
/// for any other failure.
fn written<T, E, R>(context: &'static str, result: Result<T, SdkError<E, R>>) -> Result<bool>
where
    E: ConditionFailure + ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    match result {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(ConditionFailure::is_condition_failure) =>
        {
            Ok(false)
        }
        Err(e) => Err(sdk_error(context, e)),
    }
}

/// `ceil(ms / 1000)` for the TTL attribute, so an item never expires before it is due.
fn epoch_seconds_ceil(ms: Millis) -> Millis {
    ms.div_euclid(1000) + Millis::from(ms.rem_euclid(1000) != 0)
}

fn duration_ms(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

impl DynamoStore {
    /// One item by key, read strongly consistent.
    async fn get(&self, context: &'static str, pk: String, sk: &str) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(context, e))?;
        Ok(out.item.filter(|item| !item.is_empty()))
    }

    /// Every item of a partition whose sort key starts with `prefix`, in sort key order,
    /// following pages to the end.
    async fn query_prefix(
        &self,
        context: &'static str,
        pk: String,
        prefix: &str,
    ) -> Result<Vec<Item>> {
        self.query_partition(context, pk, Some(prefix)).await
    }

    /// Every item of a partition, or of those whose sort key starts with `prefix`, in
    /// sort key order, following pages to the end. (No prefix rather than an empty one:
    /// DynamoDB refuses empty strings in key conditions.)
    async fn query_partition(
        &self,
        context: &'static str,
        pk: String,
        prefix: Option<&str>,
    ) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", s(&pk))
                .consistent_read(true)
                .set_exclusive_start_key(start);
            request = match prefix {
                Some(prefix) => request
                    .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                    .expression_attribute_names("#sk", SK)
                    .expression_attribute_values(":prefix", s(prefix)),
                None => request.key_condition_expression("#pk = :pk"),
            };
            let out = request.send().await.map_err(|e| sdk_error(context, e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok(items),
            }
        }
    }

    /// A page of a partition's items whose sort key starts with `prefix`, in sort key order,
    /// after the item whose sort key is `prefix` + `page.after`; the cursor is the last
    /// item's sort key without the prefix.
    async fn query_page(
        &self,
        context: &'static str,
        pk: String,
        prefix: &str,
        page: &PageQuery,
    ) -> Result<(Vec<Item>, Option<String>)> {
        let limit = page.limit.clamp(1, MAX_PAGE);
        let mut items = Vec::new();
        let mut start = page
            .after
            .as_ref()
            .map(|after| key(pk.clone(), format!("{prefix}{after}")));
        // One item past the page tells whether another page follows; DynamoDB may end a
        // response early (1 MB), so keep reading until then.
        while items.len() <= limit {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", s(&pk))
                .consistent_read(true)
                .limit(i32::try_from(limit + 1 - items.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            // DynamoDB refuses an empty string in a key condition: no prefix, no condition.
            request = if prefix.is_empty() {
                request.key_condition_expression("#pk = :pk")
            } else {
                request
                    .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                    .expression_attribute_names("#sk", SK)
                    .expression_attribute_values(":prefix", s(prefix))
            };
            let out = request.send().await.map_err(|e| sdk_error(context, e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => break,
            }
        }
        let more = items.len() > limit;
        items.truncate(limit);
        let cursor = if more {
            let last = items.last().expect("a full page");
            let sk = Fields::new(last, context).s(SK)?;
            Some(sk.strip_prefix(prefix).unwrap_or(sk).to_owned())
        } else {
            None
        };
        Ok((items, cursor))
    }

    /// A page of decoded items, as [`DynamoStore::query_page`] reads them.
    async fn decoded_page<T>(
        &self,
        context: &'static str,
        pk: String,
        prefix: &str,
        page: &PageQuery,
        decode: fn(&Item) -> Result<T>,
    ) -> Result<Page<T>> {
        let (items, next_cursor) = self.query_page(context, pk, prefix, page).await?;
        Ok(Page {
            items: items.iter().map(decode).collect::<Result<_>>()?,
            next_cursor,
        })
    }

    /// Whether an item exists, read strongly consistent: what tells `Missing` from
    /// `Stale` after a refused conditional write.
    async fn written_or_why(
        &self,
        context: &'static str,
        done: bool,
        pk: String,
        sk: &str,
    ) -> Result<Written> {
        if done {
            return Ok(Written::Done);
        }
        Ok(match self.get(context, pk, sk).await? {
            Some(_) => Written::Stale,
            None => Written::Missing,
        })
    }

    /// The transaction step that moves a tenant's endpoint count by `delta`, refused (the
    /// whole transaction with it) if that would take it past `max`, or if the tenant has
    /// no count yet (see [`DynamoStore::transact_counted`]).
    fn count_endpoints_step(
        &self,
        tenant: TenantId,
        delta: i64,
        max: Option<usize>,
    ) -> Result<TransactWriteItem> {
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(tenant_pk(tenant), ENDPOINT_COUNT_SK)))
            .update_expression("SET #n = #n + :delta")
            .expression_attribute_names("#n", "n")
            .expression_attribute_values(":delta", n(delta));
        update = match (max, delta > 0) {
            (Some(max), true) => {
                // Room for `delta` more: the count is at most `max - delta` now.
                let room = i64::try_from(max).unwrap_or(i64::MAX) - delta;
                update
                    .condition_expression("attribute_exists(#n) AND #n <= :room")
                    .expression_attribute_values(":room", n(room))
            }
            _ => update.condition_expression("attribute_exists(#n)"),
        };
        Ok(TransactWriteItem::builder()
            .update(update.build().map_err(build_error)?)
            .build())
    }

    /// Runs a transaction holding a step of [`DynamoStore::count_endpoints_step`] at
    /// `counter_at`. A tenant whose endpoints were stored before they were counted has no
    /// count: the step then fails, the count is made from the endpoints stored (put only
    /// if still absent, so concurrent first writers agree on it), and the transaction runs
    /// once more. Otherwise as [`DynamoStore::transact_steps`].
    async fn transact_counted(
        &self,
        context: &'static str,
        tenant: TenantId,
        steps: Vec<TransactWriteItem>,
        counter_at: usize,
    ) -> Result<std::result::Result<(), Vec<usize>>> {
        let outcome = self.transact_steps(context, steps.clone()).await?;
        match outcome {
            Err(failed) if failed.contains(&counter_at) => {
                if self.count_endpoints_if_uncounted(tenant).await? {
                    self.transact_steps(context, steps).await
                } else {
                    Ok(Err(failed))
                }
            }
            other => Ok(other),
        }
    }

    /// Makes the tenant's endpoint count from its stored endpoints if it has none; returns
    /// whether it had none.
    async fn count_endpoints_if_uncounted(&self, tenant: TenantId) -> Result<bool> {
        let context = "count endpoints";
        if self
            .get(context, tenant_pk(tenant), ENDPOINT_COUNT_SK)
            .await?
            .is_some()
        {
            return Ok(false);
        }
        let mut count: i64 = 0;
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", s(tenant_pk(tenant)))
                .expression_attribute_values(":prefix", s(ENDPOINT_PREFIX))
                .select(aws_sdk_dynamodb::types::Select::Count)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error(context, e))?;
            count += i64::from(out.count);
            match out.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => break,
            }
        }
        // Another writer may have made it meanwhile, from the same endpoints: either is right.
        self.put_new(
            context,
            item(
                tenant_pk(tenant),
                ENDPOINT_COUNT_SK,
                [("n", Some(n(count)))],
            ),
        )
        .await?;
        Ok(true)
    }

    /// The conditional update that writes a delivery's whole state over its record (or
    /// creates it), if the record has `expected_attempts` attempts, appending `logged` to
    /// its log. An update rather than a put, so the log the record carries is kept. A
    /// delivery settled before any claim (its endpoint was deleted or disabled) or whose
    /// first attempt was made under the message's lease has no record yet, which counts
    /// as zero attempts.
    fn delivery_write(
        &self,
        delivery: &Delivery,
        expected_attempts: u32,
        logged: Option<&Attempt>,
    ) -> DeliveryWrite {
        let mut fields = self.expiring(delivery_item(delivery), delivery.updated_at);
        fields.remove(PK);
        fields.remove(SK);
        let record = key(message_pk(delivery.message), delivery_sk(delivery.endpoint));
        let mut names = HashMap::from([("#attempts".to_owned(), "attempts".to_owned())]);
        let condition = if expected_attempts == 0 {
            names.insert("#pk".to_owned(), PK.to_owned());
            "attribute_not_exists(#pk) OR #attempts = :expected"
        } else {
            "#attempts = :expected"
        };
        let mut values = HashMap::from([(":expected".to_owned(), n(expected_attempts))]);
        // Attribute names are plain identifiers, so each can be its own placeholder.
        let mut set: Vec<String> = Vec::new();
        for (name, value) in fields {
            set.push(format!("#{name} = :{name}"));
            names.insert(format!("#{name}"), name.clone());
            values.insert(format!(":{name}"), value);
        }
        if let Some(attempt) = logged {
            set.push(format!(
                "#{LOG} = list_append(if_not_exists(#{LOG}, :none), :logged)"
            ));
            names.insert(format!("#{LOG}"), LOG.to_owned());
            values.insert(":none".to_owned(), AttributeValue::L(Vec::new()));
            values.insert(
                ":logged".to_owned(),
                AttributeValue::L(vec![log_entry(attempt)]),
            );
        }
        let absent: Vec<&str> = OPTIONAL_DELIVERY_ATTRIBUTES
            .into_iter()
            .filter(|name| !names.contains_key(&format!("#{name}")))
            .collect();
        for name in &absent {
            names.insert(format!("#{name}"), (*name).to_owned());
        }
        let mut update = format!("SET {}", set.join(", "));
        if !absent.is_empty() {
            let removed: Vec<String> = absent.iter().map(|name| format!("#{name}")).collect();
            update.push_str(&format!(" REMOVE {}", removed.join(", ")));
        }
        DeliveryWrite {
            key: record,
            update,
            condition,
            names,
            values,
        }
    }

    /// Puts a message item (or a page's, under `message`, its first) unless it is stored.
    /// `None` when this call stored it, else the stored item: read back rather than echo
    /// the input, as a retried publish must see the version that was stored first.
    async fn put_message(&self, message: &Message, item: Item) -> Result<Option<Item>> {
        // A copy of an event stored before the sharded layout (handed over again across
        // the upgrade) must find it there, not store it a second time. Only until the
        // migration: a table in that state served its tenants at most a key's 1,000 units.
        if self.legacy_keys().await? {
            let old = self
                .get(
                    "insert message",
                    tenant_pk(message.tenant),
                    &message_sk(message.id),
                )
                .await?;
            if old.is_some() {
                return Ok(old);
            }
        }
        if self.put_new("insert message", item).await? {
            return Ok(None);
        }
        self.get(
            "insert message",
            message_log_pk(message.tenant, message.id),
            &message_sk(message.id),
        )
        .await?
        .ok_or_else(|| Error::backend("insert message", "the message vanished after a refused put"))
        .map(Some)
    }

    /// The first results recorded for a message's page, its own among them; `None` when
    /// its page has none (or it is no page's).
    async fn firsts_of(&self, message: MessageId) -> Result<Option<(TenantId, Vec<First>)>> {
        let Some(item) = self
            .get(
                "get first results",
                firsts_pk(message.page_base()),
                FIRSTS_SK,
            )
            .await?
        else {
            return Ok(None);
        };
        let (tenant, firsts) = decode_firsts(&item)?;
        let index = message.page_index();
        let own: Vec<First> = firsts.into_iter().filter(|f| f.i == index).collect();
        Ok((!own.is_empty()).then_some((tenant, own)))
    }

    /// Puts an item unless one with its key exists; returns whether it did.
    async fn put_new(&self, context: &'static str, item: Item) -> Result<bool> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        written(context, result)
    }

    /// A transaction step putting an item unless one with its key exists.
    fn put_new_step(&self, item: Item) -> Result<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Runs a transaction; `false` when it was cancelled because a condition was false.
    async fn transact(&self, context: &'static str, steps: Vec<TransactWriteItem>) -> Result<bool> {
        Ok(self.transact_steps(context, steps).await?.is_ok())
    }

    /// Runs a transaction; when it was cancelled because conditions were false, the
    /// positions of the steps whose condition failed.
    async fn transact_steps(
        &self,
        context: &'static str,
        steps: Vec<TransactWriteItem>,
    ) -> Result<std::result::Result<(), Vec<usize>>> {
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(steps))
            .send()
            .await;
        let Err(e) = result else {
            return Ok(Ok(()));
        };
        // A cancelled transaction reports why per step; the codes are strings by API
        // design (there is no typed error per step).
        let failed: Vec<usize> = match e.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => cancelled
                .cancellation_reasons()
                .iter()
                .enumerate()
                .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                .map(|(i, _)| i)
                .collect(),
            _ => Vec::new(),
        };
        if failed.is_empty() {
            Err(sdk_error(context, e))
        } else {
            Ok(Err(failed))
        }
    }
}

// ---- tenants and keys -----------------------------------------------------------------

#[async_trait]
impl TenantStore for DynamoStore {
    async fn create_tenant(&self, tenant: &Tenant, first_key: &ApiKeyRecord) -> Result<()> {
        let mut steps = vec![
            self.put_new_step(tenant_item(tenant))?,
            self.put_new_step(item(
                tenant_pk(first_key.tenant),
                key_sk(first_key.id),
                key_attributes(first_key),
            ))?,
            self.put_new_step(item(
                key_lookup_pk(&first_key.hash),
                KEY_LOOKUP_SK,
                key_attributes(first_key),
            ))?,
        ];
        if let Some(parent) = tenant.parent {
            // With the tenant or not at all, so a sub-account is always listed.
            steps.push(self.put_new_step(sub_account_item(tenant, parent))?);
        }
        if self.transact("create tenant", steps).await? {
            Ok(())
        } else {
            // Fresh ULIDs and 256-bit keys do not collide; like a primary key violation
            // in SQLite this is a fault, not a caller's conflict.
            Err(Error::backend(
                "create tenant",
                "the tenant or its key already exists",
            ))
        }
    }

    async fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
        self.get("get tenant", tenant_pk(id), TENANT_SK)
            .await?
            .map(|item| decode_tenant(&item))
            .transpose()
    }

    async fn list_sub_accounts(&self, parent: TenantId, page: &PageQuery) -> Result<Page<Tenant>> {
        self.decoded_page(
            "list sub-accounts",
            tenant_pk(parent),
            SUB_ACCOUNT_PREFIX,
            page,
            decode_tenant,
        )
        .await
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        // The key and its lookup copy in one transaction, so a key is never findable by
        // hash without being listed, or the other way round.
        let steps = vec![
            self.put_new_step(item(
                tenant_pk(key.tenant),
                key_sk(key.id),
                key_attributes(key),
            ))?,
            self.put_new_step(item(
                key_lookup_pk(&key.hash),
                KEY_LOOKUP_SK,
                key_attributes(key),
            ))?,
        ];
        if self.transact("insert api key", steps).await? {
            Ok(())
        } else {
            Err(Error::backend("insert api key", "the key already exists"))
        }
    }

    async fn get_api_key(&self, tenant: TenantId, id: ApiKeyId) -> Result<Option<ApiKeyRecord>> {
        self.get("get api key", tenant_pk(tenant), &key_sk(id))
            .await?
            .map(|item| decode_key(&item))
            .transpose()
    }

    async fn list_api_keys(
        &self,
        tenant: TenantId,
        page: &PageQuery,
    ) -> Result<Page<ApiKeyRecord>> {
        self.decoded_page(
            "list api keys",
            tenant_pk(tenant),
            KEY_PREFIX,
            page,
            decode_key,
        )
        .await
    }

    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at: Millis,
        only_if_live: bool,
    ) -> Result<Written> {
        // The lookup copy is keyed by hash, which only the tenant's key item knows.
        let Some(record) = self.get_api_key(tenant, id).await? else {
            return Ok(Written::Missing);
        };
        if record.revoked_at.is_some() {
            return Ok(if only_if_live {
                Written::Stale
            } else {
                Written::Done
            });
        }
        // Both copies in one transaction; `if_not_exists` keeps the first revocation time
        // when two revocations race, and a caller wanting a live key gets none revoked
        // meanwhile.
        let condition = if only_if_live {
            "attribute_exists(#pk) AND attribute_not_exists(#revoked)"
        } else {
            "attribute_exists(#pk)"
        };
        let revoke = |pk: String, sk: String| {
            Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(pk, sk)))
                .update_expression("SET #revoked = if_not_exists(#revoked, :at)")
                .condition_expression(condition)
                .expression_attribute_names("#revoked", "revoked_at")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":at", n(at))
                .build()
                .map(|update| TransactWriteItem::builder().update(update).build())
                .map_err(build_error)
        };
        let steps = vec![
            revoke(tenant_pk(tenant), key_sk(id))?,
            revoke(key_lookup_pk(&record.hash), KEY_LOOKUP_SK.to_owned())?,
        ];
        let done = self.transact("revoke api key", steps).await?;
        self.written_or_why("revoke api key", done, tenant_pk(tenant), &key_sk(id))
            .await
    }

    async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKeyRecord>> {
        self.get("find api key", key_lookup_pk(hash), KEY_LOOKUP_SK)
            .await?
            .map(|item| decode_key(&item))
            .transpose()
    }

    async fn operator_key_hash(&self) -> Result<Option<KeyHash>> {
        let Some(item) = self
            .get("get operator key", OPERATOR.to_owned(), OPERATOR)
            .await?
        else {
            return Ok(None);
        };
        let hash = Fields::new(&item, "decode operator key").string("hash")?;
        Ok(Some(KeyHash::from_hex(hash)))
    }

    async fn init_operator_key_hash(&self, hash: &KeyHash) -> Result<bool> {
        let item = item(
            OPERATOR.to_owned(),
            OPERATOR,
            [("hash", Some(s(hash.as_hex())))],
        );
        self.put_new("init operator key", item).await
    }

    // A GetItem, which every function may make (DescribeTable would need a right of its
    // own): the operator key's item, small and always at the same key.
    async fn probe(&self) -> Result<()> {
        self.operator_key_hash().await.map(|_| ())
    }
}

// ---- domains and endpoints ------------------------------------------------------------

#[async_trait]
impl EndpointStore for DynamoStore {
    async fn create_domain(&self, domain: &Domain) -> Result<()> {
        if self.put_new("create domain", domain_item(domain)).await? {
            Ok(())
        } else {
            Err(Error::conflict(
                "domain_exists",
                format!("domain {:?} already exists", domain.name),
            ))
        }
    }

    async fn get_domain(&self, tenant: TenantId, name: &str) -> Result<Option<Domain>> {
        self.get("get domain", tenant_pk(tenant), &domain_sk(name))
            .await?
            .map(|item| decode_domain(&item))
            .transpose()
    }

    async fn list_domains(&self, tenant: TenantId, page: &PageQuery) -> Result<Page<Domain>> {
        // Sort keys order by name (UTF-8 bytes), as SQLite's `ORDER BY name`.
        self.decoded_page(
            "list domains",
            tenant_pk(tenant),
            DOMAIN_PREFIX,
            page,
            decode_domain,
        )
        .await
    }

    async fn delete_domain(
        &self,
        tenant: TenantId,
        name: &str,
        created_at: Option<Millis>,
    ) -> Result<Written> {
        let pk = tenant_pk(tenant);
        let Some(stored) = self
            .get("delete domain", pk.clone(), &domain_sk(name))
            .await?
        else {
            return Ok(Written::Missing);
        };
        let stored_at: Millis = Fields::new(&stored, "decode domain").n("created_at")?;
        if created_at.is_some_and(|at| at != stored_at) {
            return Ok(Written::Stale);
        }
        // Each round deletes up to a transaction's worth of the domain's endpoints, each
        // only if it still exists, and takes them off the tenant's count; the round that
        // finds no more than fit deletes the domain too, last, so a failure before leaves
        // it there for a retry to finish the job. A round refused because an endpoint went
        // meanwhile (or a round applied twice) reads the endpoints again: the count never
        // loses what it should not.
        let per_round = MAX_TRANSACTION_ITEMS - 2;
        for _ in 0..MAX_DOMAIN_ROUNDS {
            let mut scoped = Vec::new();
            for item in self
                .query_prefix("delete domain", pk.clone(), ENDPOINT_PREFIX)
                .await?
            {
                let f = Fields::new(&item, "decode endpoint");
                if f.opt_s("domain")? == Some(name) {
                    scoped.push(f.string(SK)?);
                }
            }
            let last = scoped.len() <= per_round;
            scoped.truncate(per_round);
            let mut steps = Vec::with_capacity(scoped.len() + 2);
            for sk in &scoped {
                let delete = Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(pk.clone(), sk.clone())))
                    .condition_expression("attribute_exists(#pk)")
                    .expression_attribute_names("#pk", PK)
                    .build()
                    .map_err(build_error)?;
                steps.push(TransactWriteItem::builder().delete(delete).build());
            }
            let counter_at = steps.len();
            if !scoped.is_empty() {
                steps.push(self.count_endpoints_step(tenant, -(scoped.len() as i64), None)?);
            }
            let domain_at = steps.len();
            if last {
                let domain = Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(pk.clone(), domain_sk(name))))
                    .condition_expression("attribute_exists(#pk) AND #created = :created")
                    .expression_attribute_names("#pk", PK)
                    .expression_attribute_names("#created", "created_at")
                    .expression_attribute_values(":created", n(stored_at))
                    .build()
                    .map_err(build_error)?;
                steps.push(TransactWriteItem::builder().delete(domain).build());
            }
            let outcome = if scoped.is_empty() {
                self.transact_steps("delete domain", steps).await?
            } else {
                self.transact_counted("delete domain", tenant, steps, counter_at)
                    .await?
            };
            match outcome {
                Ok(()) if last => return Ok(Written::Done),
                Ok(()) => {}
                Err(failed) if last && failed.contains(&domain_at) => {
                    // Deleted or made again meanwhile: the domain as it is now says which.
                    return self
                        .written_or_why("delete domain", false, pk, &domain_sk(name))
                        .await;
                }
                Err(_) => {}
            }
        }
        Err(Error::backend(
            "delete domain",
            "the domain's endpoints kept changing under the delete",
        ))
    }

    async fn create_endpoint(&self, endpoint: &Endpoint, max_per_tenant: usize) -> Result<()> {
        let mut item = endpoint_item(endpoint)?;
        item.insert("version".into(), n(1));
        let steps = vec![
            self.put_new_step(item)?,
            self.count_endpoints_step(endpoint.tenant, 1, Some(max_per_tenant))?,
        ];
        match self
            .transact_counted("create endpoint", endpoint.tenant, steps, 1)
            .await?
        {
            Ok(()) => Ok(()),
            Err(failed) if failed.contains(&1) => Err(Error::too_many_endpoints(max_per_tenant)),
            // A fresh ULID does not collide: like a primary key violation in SQLite this
            // is a fault, not a caller's conflict.
            Err(_) => Err(Error::backend(
                "create endpoint",
                "the endpoint already exists",
            )),
        }
    }

    async fn update_endpoint(&self, endpoint: &Endpoint, expected_version: u64) -> Result<Written> {
        // The tenant is part of the key, so a put can never move an endpoint between
        // tenants; the condition makes it an update of the version read.
        let mut item = endpoint_item(endpoint)?;
        item.insert("version".into(), n(expected_version + 1));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(format!(
                "attribute_exists(#pk) AND {}",
                version_is(expected_version)
            ))
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":version", n(expected_version))
            .send()
            .await;
        let done = written("update endpoint", result)?;
        self.written_or_why(
            "update endpoint",
            done,
            tenant_pk(endpoint.tenant),
            &endpoint_sk(endpoint.id),
        )
        .await
    }

    async fn get_endpoint(&self, tenant: TenantId, id: EndpointId) -> Result<Option<Endpoint>> {
        self.get("get endpoint", tenant_pk(tenant), &endpoint_sk(id))
            .await?
            .map(|item| decode_endpoint(&item))
            .transpose()
    }

    async fn list_endpoints(&self, tenant: TenantId) -> Result<Vec<Endpoint>> {
        let mut endpoints = self
            .query_prefix("list endpoints", tenant_pk(tenant), ENDPOINT_PREFIX)
            .await?
            .iter()
            .map(decode_endpoint)
            .collect::<Result<Vec<_>>>()?;
        // Sort keys order by id; the port promises creation time first.
        endpoints.sort_by_key(|e| (e.created_at, e.id));
        Ok(endpoints)
    }

    async fn list_endpoints_page(
        &self,
        tenant: TenantId,
        page: &PageQuery,
    ) -> Result<Page<Endpoint>> {
        self.decoded_page(
            "list endpoints",
            tenant_pk(tenant),
            ENDPOINT_PREFIX,
            page,
            decode_endpoint,
        )
        .await
    }

    async fn delete_endpoint(
        &self,
        tenant: TenantId,
        id: EndpointId,
        expected_version: Option<u64>,
    ) -> Result<Written> {
        let mut delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(tenant_pk(tenant), endpoint_sk(id))))
            .expression_attribute_names("#pk", PK);
        delete = match expected_version {
            None => delete.condition_expression("attribute_exists(#pk)"),
            Some(version) => delete
                .condition_expression(format!("attribute_exists(#pk) AND {}", version_is(version)))
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":version", n(version)),
        };
        let steps = vec![
            TransactWriteItem::builder()
                .delete(delete.build().map_err(build_error)?)
                .build(),
            self.count_endpoints_step(tenant, -1, None)?,
        ];
        let done = self
            .transact_counted("delete endpoint", tenant, steps, 1)
            .await?
            .is_ok();
        self.written_or_why("delete endpoint", done, tenant_pk(tenant), &endpoint_sk(id))
            .await
    }

    async fn endpoint_group_version(&self, tenant: TenantId, group: &str) -> Result<u64> {
        let Some(item) = self
            .get(
                "get endpoint group",
                tenant_pk(tenant),
                &format!("{GROUP_PREFIX}{group}"),
            )
            .await?
        else {
            return Ok(0);
        };
        Fields::new(&item, "decode endpoint group").n("version")
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
        let mut guard = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(
                tenant_pk(tenant),
                format!("{GROUP_PREFIX}{group}"),
            )))
            .update_expression("SET #version = :next")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":next", n(expected_version + 1));
        guard = if expected_version == 0 {
            guard
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK)
        } else {
            guard
                .condition_expression("#version = :version")
                .expression_attribute_values(":version", n(expected_version))
        };
        let mut steps = vec![TransactWriteItem::builder()
            .update(guard.build().map_err(build_error)?)
            .build()];
        for e in remove {
            let delete = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(tenant_pk(tenant), endpoint_sk(e.id))))
                .condition_expression(format!(
                    "attribute_exists(#pk) AND {}",
                    version_is(e.version)
                ))
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":version", n(e.version))
                .build()
                .map_err(build_error)?;
            steps.push(TransactWriteItem::builder().delete(delete).build());
        }
        for e in add {
            let mut item = endpoint_item(e)?;
            item.insert("version".into(), n(1));
            steps.push(self.put_new_step(item)?);
        }
        let delta = add.len() as i64 - remove.len() as i64;
        let counted = (delta != 0).then_some(steps.len());
        if delta != 0 {
            steps.push(self.count_endpoints_step(tenant, delta, Some(max_per_tenant))?);
        }
        let outcome = match counted {
            Some(at) => {
                self.transact_counted("update endpoint group", tenant, steps, at)
                    .await?
            }
            None => self.transact_steps("update endpoint group", steps).await?,
        };
        match outcome {
            Ok(()) => Ok(Written::Done),
            Err(failed) if counted.is_some_and(|i| failed.contains(&i)) => {
                Err(Error::too_many_endpoints(max_per_tenant))
            }
            Err(_) => Ok(Written::Stale),
        }
    }

    async fn update_endpoint_health(
        &self,
        tenant: TenantId,
        id: EndpointId,
        change: &HealthChange,
    ) -> Result<bool> {
        // Each change moves the version on, so an edit made from a copy read before it is
        // refused rather than undoing it.
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant_pk(tenant), endpoint_sk(id))))
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":one", n(1));
        let request = match change {
            HealthChange::Failing { at } => request
                .update_expression(
                    "SET #since = :at, #version = if_not_exists(#version, :one) + :one",
                )
                .condition_expression("attribute_exists(#pk) AND attribute_not_exists(#since)")
                .expression_attribute_names("#since", "failing_since")
                .expression_attribute_values(":at", n(at)),
            HealthChange::Recovered => request
                .update_expression(
                    "SET #version = if_not_exists(#version, :one) + :one REMOVE #since",
                )
                .condition_expression("attribute_exists(#pk) AND attribute_exists(#since)")
                .expression_attribute_names("#since", "failing_since"),
            HealthChange::Disable { reason, at } => request
                .update_expression(
                    "SET #status = :disabled, #reason = :reason, #disabled_at = :at, \
                     #updated = :at, #version = if_not_exists(#version, :one) + :one",
                )
                .condition_expression("attribute_exists(#pk) AND #status = :active")
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#reason", "disabled_reason")
                .expression_attribute_names("#disabled_at", "disabled_at")
                .expression_attribute_names("#updated", "updated_at")
                .expression_attribute_values(":disabled", s(EndpointStatus::Disabled.as_str()))
                .expression_attribute_values(":active", s(EndpointStatus::Active.as_str()))
                .expression_attribute_values(":reason", s(reason))
                .expression_attribute_values(":at", n(at)),
        };
        written("update endpoint health", request.send().await)
    }
}

// ---- messages and idempotency keys ----------------------------------------------------

/// Attempts at binding an idempotency key before giving up: a retry is needed only when
/// the binding expires or is removed between the refused write and the read.
const IDEMPOTENCY_TRIES: usize = 3;

#[async_trait]
impl MessageStore for DynamoStore {
    async fn insert_message(&self, message: &Message) -> Result<Message> {
        let item = self.expiring(message_item(message), message.received_at);
        match self.put_message(message, item).await? {
            None => Ok(message.clone()),
            Some(stored) => decode_message(&stored),
        }
    }

    async fn insert_message_leased(
        &self,
        message: &Message,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Inserted> {
        // The lease is written by the same conditional put as the message: only the call
        // that stores the message gets it.
        let mut item = self.expiring(message_item(message), message.received_at);
        item.insert(FIRST_LEASE.to_owned(), n(lease_until));
        let Some(stored) = self.put_message(message, item).await? else {
            return Ok(Inserted {
                message: message.clone(),
                first_attempts: FirstAttempts::Leased,
            });
        };
        Ok(Inserted {
            message: decode_message(&stored)?,
            first_attempts: first_attempts_of(&stored, now)?,
        })
    }

    async fn insert_page_leased(
        &self,
        messages: &[Message],
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<Inserted>> {
        // One conditional put stores the page and the lease on every first attempt of its
        // messages, as `insert_message_leased` does for one.
        let Some(first) = messages.first() else {
            return Ok(Vec::new());
        };
        let mut item = self.expiring(page_item(messages)?, first.received_at);
        item.insert(FIRST_LEASE.to_owned(), n(lease_until));
        let Some(stored) = self.put_message(first, item).await? else {
            return Ok(messages
                .iter()
                .map(|m| Inserted {
                    message: m.clone(),
                    first_attempts: FirstAttempts::Leased,
                })
                .collect());
        };
        let first_attempts = first_attempts_of(&stored, now)?;
        Ok(decode_messages(&stored)?
            .into_iter()
            .map(|message| Inserted {
                message,
                first_attempts,
            })
            .collect())
    }

    async fn get_message(&self, tenant: TenantId, id: MessageId) -> Result<Option<Message>> {
        // Keyed under its tenant: another tenant's id is not found. A message of a page
        // is under its page's first id.
        let mut found = self
            .get("get message", message_log_pk(tenant, id), &message_sk(id))
            .await?;
        if found.is_none() && id.page_base() != id {
            let base = id.page_base();
            found = self
                .get(
                    "get message",
                    message_log_pk(tenant, base),
                    &message_sk(base),
                )
                .await?;
        }
        if found.is_none() && self.legacy_keys().await? {
            found = self
                .get("get message", tenant_pk(tenant), &message_sk(id))
                .await?;
        }
        let Some(item) = found else {
            return Ok(None);
        };
        Ok(decode_messages(&item)?.into_iter().find(|m| m.id == id))
    }

    async fn list_messages(&self, tenant: TenantId, query: &MessageQuery) -> Result<Page<Message>> {
        let limit = query.limit.clamp(1, MAX_PAGE);
        let last = match query.before {
            None => message_range_end(),
            Some(before) => match before.ulid().0.checked_sub(1) {
                Some(previous) => message_sk(MessageId::from_ulid(ulid::Ulid(previous))),
                None => {
                    return Ok(Page {
                        items: Vec::new(),
                        next_cursor: None,
                    })
                }
            },
        };
        let mut pks: Vec<String> = (0..MESSAGE_SHARDS)
            .map(|shard| message_shard_pk(tenant, shard))
            .collect();
        if self.legacy_keys().await? {
            pks.push(tenant_pk(tenant));
        }
        // Each shard is read newest first a few messages at a time, and the shards merged
        // by id (ULIDs sort by time): a page reads about one request per shard and not
        // a page's worth from each. One message past the page tells whether another follows.
        let wanted = limit + 1;
        let mut batch = wanted.div_ceil(pks.len()) + 2;
        if query.event_type.is_some() {
            // DynamoDB applies `Limit` before the filter, so a filtered listing reads more
            // per request to need fewer of them.
            batch = (batch * 4).min(MAX_PAGE);
        }
        let mut shards: Vec<ShardReader<Message>> = pks.into_iter().map(ShardReader::new).collect();
        let request = self.messages_query(&last, batch, query);
        let mut items: Vec<Message> = Vec::with_capacity(wanted);
        while items.len() < wanted {
            // Newest first.
            let Some(message) = next_merged(
                &mut shards,
                &request,
                decode_messages_newest_first,
                "list messages",
                |m| m.id,
            )
            .await?
            else {
                break;
            };
            // A page's messages come out together; the query filtered items, not them:
            // those at or after the cursor, or of another type, are left out here.
            if query.before.is_some_and(|before| message.id >= before)
                || query
                    .event_type
                    .as_ref()
                    .is_some_and(|t| *t != message.event_type)
            {
                continue;
            }
            // A message stored under both layouts (published again across the upgrade,
            // before the migration) comes out of the merge twice in a row: once is enough.
            if items
                .last()
                .is_none_or(|previous| previous.id != message.id)
            {
                items.push(message);
            }
        }
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if more {
            items.last().map(|m| m.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn claim_idempotency_key(
        &self,
        tenant: TenantId,
        key: &str,
        id: MessageId,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<MessageId>> {
        // A binding made before the upgrade holds until the migration moves it.
        if self.legacy_keys().await? {
            let old = self
                .get(
                    "claim idempotency key",
                    tenant_pk(tenant),
                    &idempotency_sk(key),
                )
                .await?;
            if let Some(bound) = old
                .map(|item| live_binding(&item, now))
                .transpose()?
                .flatten()
            {
                return Ok(Some(bound));
            }
        }
        let pk = idempotency_pk(tenant, key);
        let sk = idempotency_sk(key);
        let expires_ms = now.saturating_add(duration_ms(ttl));
        let binding = item(
            pk.clone(),
            sk.clone(),
            [
                ("message_id", Some(s(id.to_string()))),
                ("expires_ms", Some(n(expires_ms))),
                (TTL_ATTRIBUTE, Some(n(epoch_seconds_ceil(expires_ms)))),
            ],
        );
        for _ in 0..IDEMPOTENCY_TRIES {
            // TTL removes expired bindings only eventually, so an expired one still
            // present counts as absent.
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(binding.clone()))
                .condition_expression("attribute_not_exists(#pk) OR #expires <= :now")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#expires", "expires_ms")
                .expression_attribute_values(":now", n(now))
                .send()
                .await;
            if written("claim idempotency key", result)? {
                return Ok(None);
            }
            if let Some(item) = self.get("claim idempotency key", pk.clone(), &sk).await? {
                if let Some(bound) = live_binding(&item, now)? {
                    return Ok(Some(bound));
                }
            }
        }
        Err(Error::backend(
            "claim idempotency key",
            "the binding kept changing under concurrent claims",
        ))
    }
}

/// What [`DynamoStore::migrate_keys`] did: items copied to their shard's key, and items
/// found there already (copied by an earlier run, or written since); either way the old
/// item is gone.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KeyMigration {
    pub moved: u64,
    pub already_moved: u64,
}

/// The sharded partition key of a message or binding item of the unsharded layout
/// (`T#<tenant>`), or `None` for one already sharded.
fn sharded_pk(item: &Item) -> Result<Option<String>> {
    let f = Fields::new(item, "migrate keys");
    let Some(tenant) = f.s(PK)?.strip_prefix("T#").and_then(TenantId::parse) else {
        return Ok(None);
    };
    let sk = f.s(SK)?;
    if let Some(id) = sk.strip_prefix(MESSAGE_PREFIX) {
        let id = MessageId::parse(id).ok_or_else(|| f.bad(SK))?;
        return Ok(Some(message_log_pk(tenant, id)));
    }
    Ok(sk
        .strip_prefix(IDEMPOTENCY_PREFIX)
        .map(|key| idempotency_pk(tenant, key)))
}

/// The index key of a failed delivery of the unsharded layout and its shard's, or `None`
/// for an item not in the index or already sharded.
fn sharded_failed_key(item: &Item) -> Result<Option<(String, String)>> {
    let f = Fields::new(item, "migrate keys");
    let Some(old) = f.opt_string(GSI2_PK)? else {
        return Ok(None);
    };
    if !old.ends_with("#FAILED") {
        return Ok(None);
    }
    let message: MessageId = f.parsed(GSI2_SK)?;
    let new = format!("{old}#S{:02}", message_shard(message));
    Ok(Some((old, new)))
}

/// The message an idempotency binding holds, unless it has expired.
fn live_binding(item: &Item, now: Millis) -> Result<Option<MessageId>> {
    let f = Fields::new(item, "decode idempotency key");
    if f.n::<Millis>("expires_ms")? > now {
        Ok(Some(f.parsed("message_id")?))
    } else {
        Ok(None)
    }
}

/// One partition key's items as a listing that merges several keys reads them: a batch at
/// a time, decoded, in the order the key's query returns them (messages newest first from
/// the table, failed deliveries oldest first from `gsi2`).
struct ShardReader<T> {
    pk: String,
    buffered: std::collections::VecDeque<T>,
    /// Where the next request starts; `None` with `done` false: at the top.
    start: Option<Item>,
    done: bool,
}

impl<T> ShardReader<T> {
    fn new(pk: String) -> Self {
        ShardReader {
            pk,
            buffered: Default::default(),
            start: None,
            done: false,
        }
    }

    /// Reads the key's next items into the buffer, at least one unless it has no more:
    /// `query` builds the request for the key (the reader adds where it starts), `decode`
    /// reads an item, `what` names the call in errors.
    async fn fill(
        &mut self,
        query: impl Fn(&str) -> QueryFluentBuilder,
        decode: fn(&Item) -> Result<Vec<T>>,
        what: &'static str,
    ) -> Result<()> {
        while self.buffered.is_empty() && !self.done {
            let out = query(&self.pk)
                .set_exclusive_start_key(self.start.take())
                .send()
                .await
                .map_err(|e| sdk_error(what, e))?;
            for item in out.items.unwrap_or_default() {
                self.buffered.extend(decode(&item)?);
            }
            match out.last_evaluated_key {
                Some(next) if !next.is_empty() => self.start = Some(next),
                _ => self.done = true,
            }
        }
        Ok(())
    }
}

/// The next item of the merge of several keys' items: every key whose buffer is empty is
/// read (side by side, see [`ShardReader::fill`]), then the buffered head that `rank` puts
/// highest is taken. `None` once every key is read out.
async fn next_merged<T, K: Ord>(
    shards: &mut [ShardReader<T>],
    query: &(impl Fn(&str) -> QueryFluentBuilder + Sync),
    decode: fn(&Item) -> Result<Vec<T>>,
    what: &'static str,
    rank: impl Fn(&T) -> K,
) -> Result<Option<T>> {
    futures::future::try_join_all(
        shards
            .iter_mut()
            .filter(|shard| shard.buffered.is_empty() && !shard.done)
            .map(|shard| shard.fill(query, decode, what)),
    )
    .await?;
    Ok(shards
        .iter_mut()
        .filter(|shard| !shard.buffered.is_empty())
        .max_by_key(|shard| rank(&shard.buffered[0]))
        .and_then(|shard| shard.buffered.pop_front()))
}

impl DynamoStore {
    /// The query of a message shard's next messages, newest first, at or below the sort
    /// key `last`, `batch` at a time.
    fn messages_query<'a>(
        &'a self,
        last: &'a str,
        batch: usize,
        query: &'a MessageQuery,
    ) -> impl Fn(&str) -> QueryFluentBuilder + Sync + 'a {
        move |pk: &str| {
            // A tenant's own partition holds its other records too: the key condition
            // keeps to the message range, `MSG#` up to the last id before the cursor.
            let request = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :first AND :last")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":first", s(MESSAGE_PREFIX))
                .expression_attribute_values(":last", s(last))
                .scan_index_forward(false)
                .limit(i32::try_from(batch).unwrap_or(i32::MAX));
            match &query.event_type {
                Some(event_type) => request
                    .filter_expression("#type = :type OR attribute_exists(#page)")
                    .expression_attribute_names("#type", "type")
                    .expression_attribute_names("#page", PAGE)
                    .expression_attribute_values(":type", s(event_type)),
                None => request,
            }
        }
    }

    /// Moves every message and idempotency binding of the unsharded layout (under its
    /// tenant's own partition key) to its shard's key, then records that the table is
    /// sharded, after which reads stop looking at the old keys. Each item is copied by a
    /// conditional put (an item already at the new key, moved by an earlier run or
    /// written since, is kept) and only then deleted from the old key, so a run stopped at
    /// any point loses nothing, and running it again finishes the job. Run it after every
    /// function runs the sharded layout: one still writing the old one would leave items
    /// behind.
    pub async fn migrate_keys(&self) -> Result<KeyMigration> {
        let mut report = KeyMigration::default();
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(
                    "begins_with(#sk, :msg) OR begins_with(#sk, :idem) OR attribute_exists(#gpk)",
                )
                .expression_attribute_names("#sk", SK)
                .expression_attribute_names("#gpk", GSI2_PK)
                .expression_attribute_values(":msg", s(MESSAGE_PREFIX))
                .expression_attribute_values(":idem", s(IDEMPOTENCY_PREFIX))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("migrate keys", e))?;
            for old in out.items.unwrap_or_default() {
                if let Some((old_gpk, new_gpk)) = sharded_failed_key(&old)? {
                    // Conditional: a delivery reopened (or failed again) meanwhile keeps
                    // the index key its own write gave it.
                    let f = Fields::new(&old, "migrate keys");
                    let result = self
                        .client
                        .update_item()
                        .table_name(&self.table)
                        .set_key(Some(key(f.s(PK)?.to_owned(), f.s(SK)?.to_owned())))
                        .update_expression("SET #gpk = :new")
                        .condition_expression("#gpk = :old")
                        .expression_attribute_names("#gpk", GSI2_PK)
                        .expression_attribute_values(":new", s(new_gpk))
                        .expression_attribute_values(":old", s(old_gpk))
                        .send()
                        .await;
                    if written("migrate keys", result)? {
                        report.moved += 1;
                    } else {
                        report.already_moved += 1;
                    }
                    continue;
                }
                let Some(new_pk) = sharded_pk(&old)? else {
                    continue;
                };
                let mut moved = old.clone();
                moved.insert(PK.to_owned(), s(new_pk));
                if self.put_new("migrate keys", moved).await? {
                    report.moved += 1;
                } else {
                    report.already_moved += 1;
                }
                let old_key = key(
                    Fields::new(&old, "migrate keys").s(PK)?.to_owned(),
                    Fields::new(&old, "migrate keys").s(SK)?.to_owned(),
                );
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(old_key))
                    .send()
                    .await
                    .map_err(|e| sdk_error("migrate keys", e))?;
            }
            match out.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => break,
            }
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(layout_item()))
            .send()
            .await
            .map_err(|e| sdk_error("migrate keys", e))?;
        *self.layout.lock().expect("layout lock") = Some((false, Instant::now()));
        Ok(report)
    }

    /// The query of an index shard's next failed deliveries, oldest first, with message ids
    /// in `[from, to]`, `batch` at a time.
    fn failed_query(
        &self,
        from: MessageId,
        to: Option<MessageId>,
        batch: usize,
    ) -> impl Fn(&str) -> QueryFluentBuilder + Sync + '_ {
        move |pk: &str| {
            let request = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(GSI2)
                .expression_attribute_names("#gpk", GSI2_PK)
                .expression_attribute_names("#gsk", GSI2_SK)
                .expression_attribute_values(":gpk", s(pk))
                .expression_attribute_values(":from", s(from.to_string()))
                .limit(i32::try_from(batch).unwrap_or(i32::MAX));
            match to {
                Some(to) => request
                    .key_condition_expression("#gpk = :gpk AND #gsk BETWEEN :from AND :to")
                    .expression_attribute_values(":to", s(to.to_string())),
                None => request.key_condition_expression("#gpk = :gpk AND #gsk >= :from"),
            }
        }
    }

    /// Whether the table may still hold messages or bindings under their tenant's own
    /// partition key (written before the sharded layout), so reads look there too: until
    /// [`DynamoStore::migrate_keys`] has finished on the table.
    async fn legacy_keys(&self) -> Result<bool> {
        if let Some((legacy, read_at)) = *self.layout.lock().expect("layout lock") {
            if !legacy || read_at.elapsed() < LAYOUT_PATIENCE {
                return Ok(legacy);
            }
        }
        let legacy = self
            .get("read table layout", LAYOUT_PK.to_owned(), LAYOUT_SK)
            .await?
            .is_none();
        *self.layout.lock().expect("layout lock") = Some((legacy, Instant::now()));
        Ok(legacy)
    }
}

// ---- event types --------------------------------------------------------------------

#[async_trait]
impl EventTypeStore for DynamoStore {
    async fn create_event_type(&self, def: &CustomEventType) -> Result<()> {
        if self
            .put_new("create event type", event_type_item(def))
            .await?
        {
            Ok(())
        } else {
            Err(Error::conflict(
                "event_type_exists",
                format!("event type {:?} already exists", def.name),
            ))
        }
    }

    async fn get_event_type(&self, name: &str) -> Result<Option<CustomEventType>> {
        self.get("get event type", EVENT_TYPE_PK.to_owned(), name)
            .await?
            .map(|item| decode_event_type(&item))
            .transpose()
    }

    async fn list_event_types(&self, page: &PageQuery) -> Result<Page<CustomEventType>> {
        // Sort keys order by name (UTF-8 bytes), as SQLite's `ORDER BY name`. Every sort
        // key of the partition is a name: no prefix.
        self.decoded_page(
            "list event types",
            EVENT_TYPE_PK.to_owned(),
            "",
            page,
            decode_event_type,
        )
        .await
    }
}

// ---- portal tokens and sessions -------------------------------------------------------

const PORTAL_TOKEN_SK: &str = "TOKEN";
const PORTAL_SESSION_SK: &str = "SESSION";

fn portal_token_pk(hash: &KeyHash) -> String {
    format!("PORTALTOKEN#{}", hash.as_hex())
}

fn portal_session_pk(hash: &KeyHash) -> String {
    format!("PORTALSESSION#{}", hash.as_hex())
}

#[async_trait]
impl PortalStore for DynamoStore {
    async fn insert_login_token(
        &self,
        hash: &KeyHash,
        tenant: TenantId,
        expires_at: Millis,
    ) -> Result<()> {
        let token = item(
            portal_token_pk(hash),
            PORTAL_TOKEN_SK,
            [
                ("tenant", Some(s(tenant.to_string()))),
                ("expires_ms", Some(n(expires_at))),
                (TTL_ATTRIBUTE, Some(n(epoch_seconds_ceil(expires_at)))),
            ],
        );
        if self.put_new("insert portal login token", token).await? {
            Ok(())
        } else {
            Err(Error::backend(
                "insert portal login token",
                "a token with this hash exists",
            ))
        }
    }

    async fn take_login_token(&self, hash: &KeyHash, now: Millis) -> Result<Option<TenantId>> {
        // One conditional delete returning the item: of two uses, one deletes it. TTL
        // removes expired tokens only eventually, so the expiry is compared here.
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(portal_token_pk(hash), PORTAL_TOKEN_SK)))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
        let old = match result {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(ConditionFailure::is_condition_failure) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(sdk_error("take portal login token", e)),
        };
        let f = Fields::new(&old, "decode portal login token");
        if f.n::<Millis>("expires_ms")? <= now {
            return Ok(None);
        }
        Ok(Some(f.parsed("tenant")?))
    }

    async fn insert_portal_session(&self, hash: &KeyHash, session: &PortalSession) -> Result<()> {
        let record = item(
            portal_session_pk(hash),
            PORTAL_SESSION_SK,
            [
                ("tenant", Some(s(session.tenant.to_string()))),
                ("csrf", Some(s(session.csrf.clone()))),
                ("created_at", Some(n(session.created_at))),
                ("expires_ms", Some(n(session.expires_at))),
                (
                    TTL_ATTRIBUTE,
                    Some(n(epoch_seconds_ceil(session.expires_at))),
                ),
            ],
        );
        if self.put_new("insert portal session", record).await? {
            Ok(())
        } else {
            Err(Error::backend(
                "insert portal session",
                "a session with this hash exists",
            ))
        }
    }

    async fn get_portal_session(
        &self,
        hash: &KeyHash,
        now: Millis,
    ) -> Result<Option<PortalSession>> {
        let Some(found) = self
            .get(
                "get portal session",
                portal_session_pk(hash),
                PORTAL_SESSION_SK,
            )
            .await?
        else {
            return Ok(None);
        };
        let f = Fields::new(&found, "decode portal session");
        let session = PortalSession {
            tenant: f.parsed("tenant")?,
            csrf: f.string("csrf")?,
            created_at: f.n("created_at")?,
            expires_at: f.n("expires_ms")?,
        };
        Ok((session.expires_at > now).then_some(session))
    }

    async fn delete_portal_session(&self, hash: &KeyHash) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(portal_session_pk(hash), PORTAL_SESSION_SK)))
            .send()
            .await
            .map_err(|e| sdk_error("delete portal session", e))?;
        Ok(())
    }
}

// ---- deliveries and attempts ----------------------------------------------------------

#[async_trait]
impl DeliveryStore for DynamoStore {
    async fn get_delivery(
        &self,
        message: MessageId,
        endpoint: EndpointId,
    ) -> Result<Option<Delivery>> {
        if let Some(item) = self
            .get("get delivery", message_pk(message), &delivery_sk(endpoint))
            .await?
        {
            return decode_delivery(&item).map(Some);
        }
        Ok(self.firsts_of(message).await?.and_then(|(tenant, firsts)| {
            firsts
                .iter()
                .find(|f| f.e == endpoint)
                .map(|f| f.delivery(message, tenant))
        }))
    }

    async fn list_deliveries(&self, message: MessageId) -> Result<Vec<Delivery>> {
        // Sort keys order by endpoint id, as SQLite's `ORDER BY endpoint`.
        let mut deliveries = self
            .query_prefix("list deliveries", message_pk(message), DELIVERY_PREFIX)
            .await?
            .iter()
            .map(decode_delivery)
            .collect::<Result<Vec<_>>>()?;
        if let Some((tenant, firsts)) = self.firsts_of(message).await? {
            for first in firsts {
                if !deliveries.iter().any(|d| d.endpoint == first.e) {
                    deliveries.push(first.delivery(message, tenant));
                }
            }
            deliveries.sort_by_key(|d| d.endpoint);
        }
        Ok(deliveries)
    }

    fn records_page_firsts(&self) -> bool {
        true
    }

    async fn record_page_firsts(&self, firsts: &[(Delivery, Attempt)]) -> Result<()> {
        // One item per page (a caller gives one page's): a fan-out's first answers cost
        // one write however many deliveries they settle.
        let mut pages: Vec<(MessageId, TenantId, Vec<First>)> = Vec::new();
        for (delivery, attempt) in firsts {
            let page = attempt.message.page_base();
            match pages
                .iter_mut()
                .find(|(p, t, _)| *p == page && *t == attempt.tenant)
            {
                Some((_, _, entries)) => entries.push(First::of(delivery, attempt)),
                None => pages.push((page, attempt.tenant, vec![First::of(delivery, attempt)])),
            }
        }
        for (page, tenant, entries) in pages {
            match firsts_item(page, tenant, &entries)? {
                Some(item) => {
                    let item = self.expiring(item, entries.iter().map(|f| f.at).min().unwrap_or(0));
                    self.client
                        .put_item()
                        .table_name(&self.table)
                        .set_item(Some(item))
                        .send()
                        .await
                        .map_err(|e| sdk_error("record first results", e))?;
                }
                None => {
                    for (delivery, attempt) in firsts
                        .iter()
                        .filter(|(_, a)| a.message.page_base() == page && a.tenant == tenant)
                    {
                        self.record_attempt(delivery, 0, Some(attempt)).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn claim_delivery(
        &self,
        fresh: &Delivery,
        expected_attempts: u32,
        now: Millis,
        lease_until: Millis,
    ) -> Result<bool> {
        // A target without a record is pending with no attempts: creating the record with
        // the lease is the claim. DynamoDB cannot compare two placeholders, so whether
        // "no record" may count is decided here rather than in the condition. A first
        // attempt recorded with its page's first results has no record of its own, and
        // is not claimed again.
        if expected_attempts == 0 {
            if self
                .firsts_of(fresh.message)
                .await?
                .is_some_and(|(_, firsts)| firsts.iter().any(|f| f.e == fresh.endpoint))
            {
                return Ok(false);
            }
            let row = Delivery {
                status: DeliveryStatus::Pending,
                attempts: 0,
                lease_until: Some(lease_until),
                ..fresh.clone()
            };
            if self
                .put_new(
                    "claim delivery",
                    self.expiring(delivery_item(&row), row.updated_at),
                )
                .await?
            {
                return Ok(true);
            }
        }
        // An existing record: take the lease if it is pending with the expected attempts
        // and no live lease; nothing else changes.
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(
                message_pk(fresh.message),
                delivery_sk(fresh.endpoint),
            )))
            .update_expression("SET #lease = :lease")
            .condition_expression(
                "attribute_exists(#pk) AND #status = :pending AND #attempts = :expected \
                 AND (attribute_not_exists(#lease) OR #lease <= :now)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#lease", "lease_until")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#attempts", "attempts")
            .expression_attribute_values(":lease", n(lease_until))
            .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()))
            .expression_attribute_values(":expected", n(expected_attempts))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        written("claim delivery", result)
    }

    async fn record_attempt(
        &self,
        delivery: &Delivery,
        expected_attempts: u32,
        attempt: Option<&Attempt>,
    ) -> Result<bool> {
        let inline = attempt.filter(|_| expected_attempts < INLINE_ATTEMPTS);
        let write = self.delivery_write(delivery, expected_attempts, inline);
        match attempt {
            Some(attempt) if inline.is_none() => {
                // Past the inline log: the attempt is an item of its own, written with the
                // state it produced or not at all.
                let update = Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(write.key))
                    .update_expression(write.update)
                    .condition_expression(write.condition)
                    .set_expression_attribute_names(Some(write.names))
                    .set_expression_attribute_values(Some(write.values))
                    .build()
                    .map_err(build_error)?;
                let steps = vec![
                    TransactWriteItem::builder().update(update).build(),
                    self.put_new_step(self.expiring(attempt_item(attempt), attempt.at))?,
                ];
                self.transact("record attempt", steps).await
            }
            _ => {
                let result = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(write.key))
                    .update_expression(write.update)
                    .condition_expression(write.condition)
                    .set_expression_attribute_names(Some(write.names))
                    .set_expression_attribute_values(Some(write.values))
                    .send()
                    .await;
                written("record attempt", result)
            }
        }
    }

    async fn list_attempts(&self, tenant: TenantId, message: MessageId) -> Result<Vec<Attempt>> {
        // One query reads the deliveries (their logs) and the attempt items.
        let mut attempts = Vec::new();
        for item in self
            .query_partition("list attempts", message_pk(message), None)
            .await?
        {
            let sk = Fields::new(&item, "decode attempt").s(SK)?;
            if sk.starts_with(DELIVERY_PREFIX) {
                attempts.extend(decode_log(&item)?);
            } else if sk.starts_with(ATTEMPT_PREFIX) {
                attempts.push(decode_attempt(&item)?);
            }
        }
        if let Some((owner, firsts)) = self.firsts_of(message).await? {
            for first in firsts {
                if !attempts.iter().any(|a| a.endpoint == first.e) {
                    attempts.push(first.attempt(message, owner));
                }
            }
        }
        attempts.retain(|a| a.tenant == tenant);
        // Attempt ids are ULIDs, so creation order; ties of `at` aside that is time order,
        // and sorting makes it exactly SQLite's `ORDER BY at, id`.
        attempts.sort_by_key(|a| (a.at, a.id));
        Ok(attempts)
    }

    async fn list_failed_deliveries(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        query: &FailedQuery,
    ) -> Result<Vec<Delivery>> {
        let limit = query.limit.clamp(1, MAX_PAGE);
        let (from, to) = query.id_range();
        if to.is_some_and(|to| to < from) {
            return Ok(Vec::new());
        }
        let mut pks: Vec<String> = (0..MESSAGE_SHARDS)
            .map(|shard| failed_shard_pk(tenant, endpoint, shard))
            .collect();
        if self.legacy_keys().await? {
            pks.push(unsharded_failed_deliveries_of(tenant, endpoint));
        }
        // As a message listing: each index shard read oldest first a few at a time, and
        // merged by message id.
        let batch = limit.div_ceil(pks.len()) + 2;
        let mut shards: Vec<ShardReader<Delivery>> =
            pks.into_iter().map(ShardReader::new).collect();
        let request = self.failed_query(from, to, batch);
        let mut deliveries: Vec<Delivery> = Vec::with_capacity(limit);
        while deliveries.len() < limit {
            // Oldest first.
            let rank = |d: &Delivery| std::cmp::Reverse(d.message);
            let what = "list failed deliveries";
            let Some(delivery) =
                next_merged(&mut shards, &request, decode_deliveries, what, rank).await?
            else {
                break;
            };
            deliveries.push(delivery);
        }
        Ok(deliveries)
    }

    async fn reopen_delivery(
        &self,
        message: MessageId,
        endpoint: EndpointId,
        expected_attempts: u32,
        now: Millis,
    ) -> Result<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(message_pk(message), delivery_sk(endpoint))))
            .update_expression(
                "SET #status = :pending, #next = :now, #updated = :now \
                 REMOVE #lease, #gpk, #gsk",
            )
            .condition_expression(
                "attribute_exists(#pk) AND #status = :failed AND #attempts = :expected",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#next", "next_attempt_at")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_names("#lease", "lease_until")
            .expression_attribute_names("#attempts", "attempts")
            .expression_attribute_names("#gpk", GSI2_PK)
            .expression_attribute_names("#gsk", GSI2_SK)
            .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()))
            .expression_attribute_values(":failed", s(DeliveryStatus::Failed.as_str()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":expected", n(expected_attempts))
            .send()
            .await;
        written("reopen delivery", result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_seconds_round_up() {
        assert_eq!(epoch_seconds_ceil(0), 0);
        assert_eq!(epoch_seconds_ceil(1), 1);
        assert_eq!(epoch_seconds_ceil(999), 1);
        assert_eq!(epoch_seconds_ceil(1000), 1);
        assert_eq!(epoch_seconds_ceil(1_700_000_000_001), 1_700_000_001);
    }

    fn message(payload: &str) -> Message {
        Message {
            id: MessageId::new(),
            tenant: TenantId::new(),
            publisher: None,
            domain: None,
            event_type: "delivered".into(),
            payload: RawValue::from_string(payload.into()).expect("json"),
            idempotency_key: None,
            received_at: 7,
            targets: vec![EndpointId::new()],
        }
    }

    #[test]
    fn a_large_payload_is_stored_compressed_and_read_back_verbatim() {
        let text = format!(
            r#"{{"event":  "delivered", "recipient": "a@example.com", "tags": [{}], "é": 1.50}}"#,
            (0..200)
                .map(|i| format!("\"tag-{i}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let item = message_item(&message(&text));
        assert!(!item.contains_key("payload"));
        let packed = item[PAYLOAD_ZSTD].as_b().expect("binary");
        assert!(
            packed.as_ref().len() < text.len() / 2,
            "{} bytes",
            packed.as_ref().len()
        );
        assert_eq!(decode_message(&item).expect("decode").payload.get(), text);
    }

    #[test]
    fn the_dictionary_shrinks_a_mailgun_event_past_plain_zstd() {
        let text = r#"{"id": "Ase7i2zsRYeDXztHGENqRA", "timestamp": 1521243339.873676, "log-level": "info", "event": "delivered", "envelope": {"transport": "smtp", "sender": "bounce+7d1@mg.example.org", "sending-ip": "203.0.113.9", "targets": "bob@example.net"}, "flags": {"is-routed": false, "is-authenticated": true, "is-system-test": false, "is-test-mode": false}, "delivery-status": {"tls": true, "mx-host": "mx.example.net", "attempt-no": 1, "description": "", "session-seconds": 0.52, "utf8": true, "code": 250, "message": "OK", "certificate-verified": true}, "message": {"headers": {"to": "bob@example.net", "message-id": "20260101.1@mg.example.org", "from": "Shop <shop@example.org>", "subject": "Receipt 1042"}, "attachments": [], "size": 5120}, "recipient": "bob@example.net", "recipient-domain": "example.net", "storage": {"url": "https://storage-us-east4.api.mailgun.net/v3/domains/mg.example.org/messages/AgEFh2", "key": "AgEFh2"}, "campaigns": [], "tags": ["receipt"], "user-variables": {"order": "1042"}}"#;
        let item = message_item(&message(text));
        let with = item[PAYLOAD_ZSTD].as_b().expect("binary").as_ref().len();
        let without = zstd::bulk::compress(text.as_bytes(), PAYLOAD_ZSTD_LEVEL)
            .expect("compress")
            .len();
        assert!(
            with + 100 < without,
            "{with} bytes, {without} without the dictionary"
        );
        assert_eq!(decode_message(&item).expect("decode").payload.get(), text);
    }

    #[test]
    fn a_small_payload_stays_text() {
        let text = r#"{"n": 1}"#;
        let item = message_item(&message(text));
        assert!(!item.contains_key(PAYLOAD_ZSTD));
        assert_eq!(item["payload"].as_s().expect("text"), text);
        assert_eq!(decode_message(&item).expect("decode").payload.get(), text);
    }

    #[test]
    fn a_message_written_before_compression_still_reads() {
        let text = format!(r#"{{"body": "{}"}}"#, "x".repeat(3000));
        let mut item = message_item(&message(&text));
        item.remove(PAYLOAD_ZSTD);
        item.insert("payload".into(), s(&text));
        assert_eq!(decode_message(&item).expect("decode").payload.get(), text);
    }

    #[test]
    fn optional_attributes_are_left_out() {
        let d = Delivery::fresh(MessageId::new(), EndpointId::new(), TenantId::new(), 5);
        let item = delivery_item(&d);
        for absent in [
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "lease_until",
        ] {
            assert!(!item.contains_key(absent), "{absent} is written");
        }
        assert_eq!(decode_delivery(&item).expect("decode"), d);
    }
}
