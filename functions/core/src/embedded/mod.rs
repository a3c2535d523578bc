//! The embedded adapters of local mode: the storage and queue ports on one SQLite file.
//! This module owns opening the file and its schema; `db` runs the connections (one writer
//! committing in groups, a few readers), `store` and `queue` hold the SQL of each port,
//! `retention` the deleting of what is kept no longer.

mod db;
mod queue;
mod retention;
mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::{BackendContext, Error, Result};

pub(crate) use db::Db;

pub use queue::SqliteQueue;
pub use retention::{Sweeper, Swept};
pub use store::SqliteStore;

/// The schema this code writes, kept in SQLite's `user_version`: version 1 is [`SCHEMA`],
/// each later one a step of [`MIGRATIONS`].
const SCHEMA_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

/// How long a statement waits for a lock held by another connection to the same file (a
/// second process, or a backup tool) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Enough to keep every statement of both adapters prepared.
const STATEMENT_CACHE: usize = 128;

/// The page size of a new file. Every commit appends each page it changed, whole, to the
/// WAL, and a checkpoint must `fsync` all of it; local mode's commits each change a few
/// small rows, so smaller pages make that volume (and the checkpoints' stalls) several
/// times smaller than SQLite's default 4096 would. A file keeps the size it was made with.
const PAGE_SIZE: i64 = 1024;

/// Version 1 of the schema, the base every file starts from. Left as it is when the schema
/// changes: `CREATE TABLE IF NOT EXISTS` skips a table a file already has, so a new column
/// must come from an `ALTER TABLE` in a migration to reach existing files.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_by_tenant ON api_keys (tenant, created_at, id);
CREATE TABLE IF NOT EXISTS settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS domains (
    tenant      TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS endpoints (
    id               TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    url              TEXT NOT NULL,
    description      TEXT NOT NULL,
    event_types      TEXT,
    domain           TEXT,
    format           TEXT NOT NULL,
    secrets          TEXT NOT NULL,
    status           TEXT NOT NULL,
    disabled_reason  TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS endpoints_by_tenant ON endpoints (tenant, created_at, id);
CREATE TABLE IF NOT EXISTS messages (
    id               TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    domain           TEXT,
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    idempotency_key  TEXT,
    received_at      INTEGER NOT NULL,
    targets          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_tenant ON messages (tenant, id);
CREATE INDEX IF NOT EXISTS messages_by_tenant_type ON messages (tenant, event_type, id);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant      TEXT NOT NULL,
    key         TEXT NOT NULL,
    message     TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
    message           TEXT NOT NULL,
    endpoint          TEXT NOT NULL,
    tenant            TEXT NOT NULL,
    status            TEXT NOT NULL,
    attempts          INTEGER NOT NULL,
    next_attempt_at   INTEGER,
    last_status_code  INTEGER,
    last_error        TEXT,
    lease_until       INTEGER,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (message, endpoint)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (
    id           TEXT PRIMARY KEY,
    message      TEXT NOT NULL,
    endpoint     TEXT NOT NULL,
    tenant       TEXT NOT NULL,
    number       INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    status_code  INTEGER,
    latency_ms   INTEGER NOT NULL,
    response     TEXT NOT NULL,
    error        TEXT,
    outcome      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_message ON attempts (message, at, id);
CREATE TABLE IF NOT EXISTS queue (
    id             INTEGER PRIMARY KEY,
    body           TEXT NOT NULL,
    visible_at     INTEGER NOT NULL,
    receive_count  INTEGER NOT NULL DEFAULT 0,
    -- 1 from a receive until its ack, release or dead-letter: tells a message whose
    -- visibility timeout is running from one waiting out a delay.
    in_flight      INTEGER NOT NULL DEFAULT 0,
    sent_at        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_by_visibility ON queue (visible_at, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id             INTEGER PRIMARY KEY,
    body           TEXT NOT NULL,
    reason         TEXT NOT NULL,
    receive_count  INTEGER NOT NULL,
    at             INTEGER NOT NULL
);
"#;

/// The steps after version 1: `MIGRATIONS[i]` takes a file from version `i + 1` to `i + 2`.
/// Each runs once per file, in the transaction that records its version.
const MIGRATIONS: &[&str] = &[
    // 2: sub-accounts, the publisher of a message published for another tenant, and the
    // event types the operator adds.
    r#"
ALTER TABLE tenants ADD COLUMN parent TEXT;
CREATE INDEX IF NOT EXISTS tenants_by_parent ON tenants (parent, created_at, id);
ALTER TABLE messages ADD COLUMN publisher TEXT;
CREATE TABLE IF NOT EXISTS event_types (
    name         TEXT PRIMARY KEY,
    provider     TEXT NOT NULL,
    description  TEXT NOT NULL,
    sample       TEXT NOT NULL,
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // 3: endpoint health (auto-disable), per-endpoint rate limits, and the failed
    // deliveries of an endpoint for replays.
    r#"
ALTER TABLE endpoints ADD COLUMN disabled_at INTEGER;
ALTER TABLE endpoints ADD COLUMN failing_since INTEGER;
ALTER TABLE endpoints ADD COLUMN rate_limit INTEGER;
CREATE INDEX IF NOT EXISTS deliveries_failed_by_endpoint
    ON deliveries (tenant, endpoint, message) WHERE status = 'failed';
"#,
    // 4: endpoint versions (every write is conditional on the version read), the versions
    // of endpoint groups (a Mailgun webhook's endpoints), and the key order the paged
    // listings of endpoints, keys and sub-accounts follow.
    r#"
ALTER TABLE endpoints ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
CREATE TABLE IF NOT EXISTS endpoint_groups (
    tenant   TEXT NOT NULL,
    name     TEXT NOT NULL,
    version  INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS endpoints_by_tenant_id ON endpoints (tenant, id);
CREATE INDEX IF NOT EXISTS api_keys_by_tenant_id ON api_keys (tenant, id);
CREATE INDEX IF NOT EXISTS tenants_by_parent_id ON tenants (parent, id);
"#,
    // 5: retention, which reads messages by the time they were received (producers'
    // message ids do not carry it) and idempotency keys by expiry.
    r#"
CREATE INDEX IF NOT EXISTS messages_by_received ON messages (received_at, id);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_expiry ON idempotency_keys (expires_at);
"#,
    // 6: the portal's magic-link tokens and sessions, by the hash of their secret value.
    r#"
CREATE TABLE IF NOT EXISTS portal_tokens (
    hash        TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS portal_tokens_by_expiry ON portal_tokens (expires_at);
CREATE TABLE IF NOT EXISTS portal_sessions (
    hash        TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS portal_sessions_by_expiry ON portal_sessions (expires_at);
"#,
    // 7: dead letters the operator lists and redrives by id: ids never used twice, so an id
    // read in a listing names that message or none.
    r#"
CREATE TABLE dead_letters_unique (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    body           TEXT NOT NULL,
    reason         TEXT NOT NULL,
    receive_count  INTEGER NOT NULL,
    at             INTEGER NOT NULL
);
INSERT INTO dead_letters_unique (id, body, reason, receive_count, at)
    SELECT id, body, reason, receive_count, at FROM dead_letters;
DROP TABLE dead_letters;
ALTER TABLE dead_letters_unique RENAME TO dead_letters;
"#,
    // 8: an endpoint's payload filter, as the JSON it was saved with.
    r#"
ALTER TABLE endpoints ADD COLUMN filter TEXT;
"#,
    // 9: an endpoint's extra headers (JSON), and its receiver authentication: what may be
    // shown of it (JSON) and, in a column of its own, the credentials sealed.
    r#"
ALTER TABLE endpoints ADD COLUMN headers TEXT;
ALTER TABLE endpoints ADD COLUMN auth TEXT;
ALTER TABLE endpoints ADD COLUMN credentials BLOB;
"#,
    // 10: kept for the signing step (its keys live in the endpoint secrets).
    "",
    // 11: ordered delivery: an endpoint's ordering, and the message group of a queued
    // message (a dead letter keeps it for its redrive), whose messages are received one at
    // a time in the order sent.
    r#"
ALTER TABLE endpoints ADD COLUMN ordering TEXT NOT NULL DEFAULT 'none';
ALTER TABLE queue ADD COLUMN grp TEXT;
CREATE INDEX IF NOT EXISTS queue_by_group ON queue (grp, id) WHERE grp IS NOT NULL;
ALTER TABLE dead_letters ADD COLUMN grp TEXT;
"#,
];

/// Opens (creating if needed) the database file shared by the store and the queue.
pub fn open(path: &Path) -> Result<(Arc<SqliteStore>, Arc<SqliteQueue>)> {
    let conn = Connection::open(path).context("open database")?;
    // Only takes effect on a new file, before its first page is written.
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .context("set page size")?;
    // WAL lets readers (the read connections, an operator's sqlite3 shell) run beside the
    // writer; NORMAL sync is durable across process crashes, which is what local mode needs.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .context("set journal mode")?;
    let wal = mode.eq_ignore_ascii_case("wal");
    if !wal {
        tracing::warn!(%mode, "SQLite refused WAL mode; continuing with its journal mode");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .context("set synchronous mode")?;
    // Without WAL a reader would wait out every commit: the writer reads as well then.
    adapters(conn, wal.then_some(path))
}

/// A private in-memory database, for tests: its one connection reads and writes.
pub fn open_in_memory() -> Result<(Arc<SqliteStore>, Arc<SqliteQueue>)> {
    adapters(Connection::open_in_memory().context("open database")?, None)
}

/// The settings of every connection, the writer's and the readers'.
fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .context("set busy timeout")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

fn adapters(
    mut conn: Connection,
    read_path: Option<&Path>,
) -> Result<(Arc<SqliteStore>, Arc<SqliteQueue>)> {
    configure(&conn)?;
    migrate(&mut conn)?;
    let waiting = queue::waiting_messages(&conn).context("count queue")?;
    let db = Db::start(conn, read_path, configure)?;
    Ok((
        Arc::new(SqliteStore::new(db.clone())),
        Arc::new(SqliteQueue::new(db, waiting)),
    ))
}

/// Brings the file to [`SCHEMA_VERSION`]. One immediate transaction reads the version and
/// applies what is missing, so two processes opening an old file cannot both migrate it,
/// and a failed step leaves the file at its old version rather than half changed.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .context("begin schema migration")?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .context("read schema version")?;
    if version > SCHEMA_VERSION {
        // Refuse rather than risk misreading rows a newer release wrote.
        return Err(Error::backend(
            "open database",
            format!(
                "schema version {version} is newer than this build supports ({SCHEMA_VERSION})"
            ),
        ));
    }
    tx.execute_batch(SCHEMA).context("create schema")?;
    // A new file (version 0) got version 1 from `SCHEMA` just now.
    let done = usize::try_from(version.max(1) - 1).unwrap_or(0);
    for step in &MIGRATIONS[done..] {
        tx.execute_batch(step).context("migrate schema")?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .context("write schema version")?;
    }
    tx.commit().context("commit schema migration")
}

/// Milliseconds of a duration, saturating instead of wrapping.
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract;
    use crate::ids::{ApiKeyId, TenantId};
    use crate::keys::PlainKey;
    use crate::model::{ApiKeyRecord, Tenant};
    use crate::ports::{Outgoing, PullQueue, Queue, Store, TenantStore};

    fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("hookline.db");
        (dir, path)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_meets_the_contract() {
        let (_dir, path) = temp_db();
        let (store, _queue) = open(&path).expect("open");
        contract::store_contract(store as Arc<dyn Store>, contract::StoreTraits::SERIALIZED).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_contract_can_run_twice_on_one_database() {
        let (store, _queue) = open_in_memory().expect("open");
        contract::store_contract(
            store.clone() as Arc<dyn Store>,
            contract::StoreTraits::SERIALIZED,
        )
        .await;
        contract::store_contract(store as Arc<dyn Store>, contract::StoreTraits::SERIALIZED).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queue_meets_the_contract() {
        let (_dir, path) = temp_db();
        let (_store, queue) = open(&path).expect("open");
        contract::queue_contract(
            queue.clone() as Arc<dyn PullQueue>,
            contract::QueueTraits::EMBEDDED,
        )
        .await;
        assert_eq!(queue.depth().await.expect("depth"), 0);
        assert_eq!(queue.dead_letter_count().await.expect("count"), 1);
        contract::dead_letter_contract(
            queue.clone() as Arc<dyn PullQueue>,
            queue.clone() as Arc<dyn crate::ports::DeadLetters>,
        )
        .await;
        assert_eq!(queue.depth().await.expect("depth"), 0);
        assert_eq!(queue.dead_letter_count().await.expect("count"), 1);
    }

    #[tokio::test]
    async fn data_survives_reopening_the_file() {
        let (_dir, path) = temp_db();
        let tenant = Tenant {
            id: TenantId::new(),
            name: "Acme".into(),
            parent: None,
            created_at: 1_700_000_000_000,
        };
        let key = ApiKeyRecord {
            id: ApiKeyId::new(),
            tenant: tenant.id,
            hash: PlainKey::generate_tenant().hash(),
            prefix: "hk_abcde".into(),
            created_at: tenant.created_at,
            revoked_at: None,
        };
        {
            let (store, queue) = open(&path).expect("open");
            store.create_tenant(&tenant, &key).await.expect("create");
            queue
                .send(vec![Outgoing {
                    body: "kept".into(),
                    delay: Duration::ZERO,
                }])
                .await
                .expect("send");
        }
        let (store, queue) = open(&path).expect("reopen");
        assert_eq!(
            store.get_tenant(tenant.id).await.expect("get"),
            Some(tenant)
        );
        assert_eq!(
            store.find_api_key(&key.hash).await.expect("find"),
            Some(key)
        );
        let got = queue
            .receive(10, Duration::from_secs(30))
            .await
            .expect("receive");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "kept");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sends_all_commit_and_are_counted() {
        let (_dir, path) = temp_db();
        let (_store, queue) = open(&path).expect("open");
        let sends: Vec<_> = (0..500)
            .map(|n| {
                let queue = Arc::clone(&queue);
                tokio::spawn(async move {
                    queue
                        .send(vec![Outgoing {
                            body: format!("m{n}"),
                            delay: Duration::ZERO,
                        }])
                        .await
                })
            })
            .collect();
        for send in sends {
            send.await.expect("task").expect("send");
        }
        assert_eq!(queue.depth().await.expect("depth"), 500);
        assert_eq!(queue.waiting(), 500);
    }

    #[tokio::test]
    async fn waiting_counts_messages_sent_for_now_until_first_received() {
        let (_dir, path) = temp_db();
        let (_store, queue) = open(&path).expect("open");
        let outgoing = |body: &str, delay: Duration| Outgoing {
            body: body.into(),
            delay,
        };
        queue
            .send(vec![
                outgoing("a", Duration::ZERO),
                outgoing("b", Duration::ZERO),
                outgoing("c", Duration::ZERO),
                outgoing("later", Duration::from_secs(600)),
            ])
            .await
            .expect("send");
        assert_eq!(queue.waiting(), 3, "a delayed send is not waiting");
        let got = queue
            .receive(2, Duration::from_secs(600))
            .await
            .expect("receive");
        assert_eq!(got.len(), 2);
        assert_eq!(queue.waiting(), 1, "received messages are taken");
        queue
            .ack(std::slice::from_ref(&got[0].receipt))
            .await
            .expect("ack");
        queue
            .dead_letter(&got[1].receipt, "poison")
            .await
            .expect("dead-letter");
        assert_eq!(queue.waiting(), 1);
        let third = queue
            .receive(1, Duration::from_secs(600))
            .await
            .expect("receive");
        // A released retry is not new work from publishers.
        queue
            .release(&third[0].receipt, Duration::ZERO)
            .await
            .expect("release");
        assert_eq!(queue.waiting(), 0);
        queue
            .send(vec![outgoing("d", Duration::ZERO)])
            .await
            .expect("send");
        drop(queue);

        let (_store, queue) = open(&path).expect("reopen");
        assert_eq!(queue.waiting(), 1, "counted from the file at open");
        assert_eq!(
            queue.depth().await.expect("depth"),
            3,
            "c, later and d are stored"
        );
    }

    #[tokio::test]
    async fn publishers_are_pushed_back_only_over_the_limit() {
        let (_dir, path) = temp_db();
        let (_store, queue) = open(&path).expect("open");
        let send = |n: usize| {
            let queue = Arc::clone(&queue);
            async move {
                let batch = (0..n)
                    .map(|i| Outgoing {
                        body: format!("m{i}"),
                        delay: Duration::ZERO,
                    })
                    .collect();
                queue.send(batch).await.expect("send");
            }
        };
        send(3).await;
        let limited = queue.with_max_waiting(Some(3));
        assert_eq!(queue.push_back(), None, "no limit, no push-back");
        assert_eq!(limited.push_back(), None, "at the limit, still taken");
        send(1).await;
        assert_eq!(limited.push_back(), Some(queue::PUSH_BACK));
        let got = limited
            .receive(2, Duration::from_secs(600))
            .await
            .expect("receive");
        assert_eq!(got.len(), 2);
        assert_eq!(limited.push_back(), None, "taken by a receiver: room again");
    }

    #[tokio::test]
    async fn reset_visibility_frees_in_flight_messages_only() {
        let (_dir, path) = temp_db();
        let (_store, queue) = open(&path).expect("open");
        queue
            .send(vec![
                Outgoing {
                    body: "in flight".into(),
                    delay: Duration::ZERO,
                },
                Outgoing {
                    body: "delayed".into(),
                    delay: Duration::from_secs(600),
                },
            ])
            .await
            .expect("send");
        let first = queue
            .receive(10, Duration::from_secs(600))
            .await
            .expect("receive");
        assert_eq!(first.len(), 1);
        assert!(queue
            .receive(10, Duration::from_secs(600))
            .await
            .expect("receive")
            .is_empty());
        drop(queue);

        // As local mode does at startup: nothing can be mid-flight in a fresh process.
        let (_store, queue) = open(&path).expect("reopen");
        queue.reset_visibility().await.expect("reset");
        let again = queue
            .receive(10, Duration::from_secs(600))
            .await
            .expect("receive");
        assert_eq!(again.len(), 1, "only the in-flight message is freed");
        assert_eq!(again[0].body, "in flight");
        assert_eq!(again[0].receive_count, 2);
        assert_eq!(queue.depth().await.expect("depth"), 2);
    }

    #[tokio::test]
    async fn clear_leases_frees_claimed_deliveries() {
        use crate::ids::{EndpointId, MessageId};
        use crate::model::Delivery;
        use crate::ports::DeliveryStore;

        let (store, _queue) = open_in_memory().expect("open");
        let fresh = Delivery::fresh(MessageId::new(), EndpointId::new(), TenantId::new(), 1_000);
        assert!(store
            .claim_delivery(&fresh, 0, 1_000, 900_000)
            .await
            .expect("claim"));
        assert!(!store
            .claim_delivery(&fresh, 0, 2_000, 900_000)
            .await
            .expect("claim"));
        store.clear_leases().await.expect("clear");
        assert!(store
            .claim_delivery(&fresh, 0, 2_000, 900_000)
            .await
            .expect("claim"));
    }

    #[tokio::test]
    async fn messages_past_max_receives_are_dead_lettered() {
        let (_store, queue) = open_in_memory().expect("open");
        let queue = queue.with_max_receives(2);
        queue
            .send(vec![Outgoing {
                body: "poison".into(),
                delay: Duration::ZERO,
            }])
            .await
            .expect("send");
        for n in 1..=2 {
            let got = queue.receive(1, Duration::ZERO).await.expect("receive");
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].receive_count, n);
        }
        assert!(queue
            .receive(1, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty());
        assert_eq!(queue.depth().await.expect("depth"), 0);
        assert_eq!(
            queue.dead_letter_reasons().await.expect("list"),
            vec![(
                "poison".to_string(),
                crate::ports::MAX_RECEIVES_REASON.to_string()
            )]
        );
    }

    #[tokio::test]
    async fn a_sequence_has_one_message_out_at_a_time_in_order_across_reopening() {
        use crate::ports::{DeadLetters, Sequenced};
        let (dir, path) = temp_db();
        let seq = |body: &str, group: &str| Sequenced {
            body: body.into(),
            group: group.into(),
            dedup: body.into(),
        };
        let bodies = |got: &[crate::ports::Received]| -> Vec<String> {
            let mut b: Vec<String> = got.iter().map(|r| r.body.clone()).collect();
            b.sort();
            b
        };
        {
            let (_store, queue) = open(&path).expect("open");
            queue
                .send_sequenced(vec![seq("a1", "a"), seq("a2", "a"), seq("b1", "b")])
                .await
                .expect("send");
            queue
                .send_sequenced(vec![seq("a3", "a")])
                .await
                .expect("send");
            queue
                .send(vec![Outgoing {
                    body: "free".into(),
                    delay: Duration::ZERO,
                }])
                .await
                .expect("send");
            // Sequences are not counted as waiting for back-pressure.
            assert_eq!(queue.waiting(), 1);
            let got = queue
                .receive(10, Duration::from_secs(60))
                .await
                .expect("receive");
            assert_eq!(bodies(&got), ["a1", "b1", "free"]);
            // Released, the head comes back before anything behind it.
            let a1 = got.iter().find(|r| r.body == "a1").unwrap();
            queue
                .release(&a1.receipt, Duration::ZERO)
                .await
                .expect("release");
            let got = queue
                .receive(10, Duration::from_secs(60))
                .await
                .expect("receive");
            assert_eq!(bodies(&got), ["a1"]);
            // Dropped here as a killed process leaves it: a1 in flight.
        }
        let (_store, queue) = open(&path).expect("reopen");
        assert_eq!(queue.waiting(), 0);
        queue.reset_visibility().await.expect("reset");
        let got = queue
            .receive(10, Duration::from_secs(60))
            .await
            .expect("receive");
        assert_eq!(
            bodies(&got),
            ["a1", "b1", "free"],
            "heads again after a restart"
        );
        let a1 = got.iter().find(|r| r.body == "a1").unwrap();
        queue
            .ack(std::slice::from_ref(&a1.receipt))
            .await
            .expect("ack");
        let got = queue
            .receive(10, Duration::from_secs(60))
            .await
            .expect("receive");
        assert_eq!(bodies(&got), ["a2"]);
        queue
            .dead_letter(&got[0].receipt, "refused")
            .await
            .expect("dead-letter");
        let got = queue
            .receive(10, Duration::from_secs(60))
            .await
            .expect("receive");
        assert_eq!(
            bodies(&got),
            ["a3"],
            "a dead letter lets its sequence go on"
        );
        // Redriven, a dead letter of a sequence goes to its end.
        let letters = queue
            .list_dead_letters(&crate::model::PageQuery::first(10))
            .await
            .expect("list");
        queue
            .redrive(Some(&[letters.items[0].id.clone()]))
            .await
            .expect("redrive");
        assert!(queue
            .receive(10, Duration::from_secs(60))
            .await
            .expect("receive")
            .is_empty());
        queue.ack(&[got[0].receipt.clone()]).await.expect("ack");
        let got = queue
            .receive(10, Duration::from_secs(60))
            .await
            .expect("receive");
        assert_eq!(bodies(&got), ["a2"]);
        drop(dir);
    }

    #[tokio::test]
    async fn send_clamps_delays_to_max_delay() {
        let (_store, queue) = open_in_memory().expect("open");
        assert_eq!(queue.max_delay(), Duration::from_secs(900));
        let before = chrono::Utc::now().timestamp_millis();
        queue
            .send(vec![Outgoing {
                body: "far".into(),
                delay: Duration::from_secs(86_400),
            }])
            .await
            .expect("send");
        let visible_at = queue
            .next_visible_at()
            .await
            .expect("next")
            .expect("a message");
        let after = chrono::Utc::now().timestamp_millis();
        assert!(visible_at >= before + 900_000 && visible_at <= after + 900_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_ready_wakes_on_send() {
        let (_store, queue) = open_in_memory().expect("open");
        let waiter = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.wait_ready(Duration::from_secs(3_600)).await })
        };
        // Give the waiter time to start waiting; a send before that is also fine, since
        // it then sees the message.
        tokio::time::sleep(Duration::from_millis(50)).await;
        queue
            .send(vec![Outgoing {
                body: "wake".into(),
                delay: Duration::ZERO,
            }])
            .await
            .expect("send");
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("wait_ready returned after a send")
            .expect("waiter");
    }

    #[tokio::test]
    async fn opening_a_version_1_file_upgrades_it_and_keeps_its_data() {
        use crate::ids::MessageId;
        use crate::ports::{EventTypeStore, MessageStore};

        let (_dir, path) = temp_db();
        let parent = TenantId::new();
        let message = MessageId::new();
        {
            // The two tables version 2 changes, as version 1 made them, with a row each.
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE tenants (
                     id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at INTEGER NOT NULL
                 );
                 CREATE TABLE messages (
                     id TEXT PRIMARY KEY, tenant TEXT NOT NULL, domain TEXT,
                     event_type TEXT NOT NULL, payload TEXT NOT NULL, idempotency_key TEXT,
                     received_at INTEGER NOT NULL, targets TEXT NOT NULL
                 );
                 PRAGMA user_version = 1;",
            )
            .expect("version 1 schema");
            conn.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES (?1, 'Old', 5)",
                [parent.to_string()],
            )
            .expect("old tenant");
            conn.execute(
                "INSERT INTO messages (id, tenant, event_type, payload, received_at, targets)
                 VALUES (?1, ?2, 'delivered', '{ \"kept\": 1 }', 6, '[]')",
                [message.to_string(), parent.to_string()],
            )
            .expect("old message");
        }

        let (store, _queue) = open(&path).expect("open upgrades the file");
        let tenant = store.get_tenant(parent).await.expect("get").expect("kept");
        assert_eq!((tenant.name.as_str(), tenant.parent), ("Old", None));
        let stored = store
            .get_message(parent, message)
            .await
            .expect("get")
            .expect("kept");
        assert_eq!(stored.payload.get(), r#"{ "kept": 1 }"#);
        assert_eq!(stored.publisher, None);

        // What version 2 added works on the upgraded file.
        let (child, key) = {
            let t = Tenant {
                id: TenantId::new(),
                name: "Child".into(),
                parent: Some(parent),
                created_at: 7,
            };
            let key = ApiKeyRecord {
                id: ApiKeyId::new(),
                tenant: t.id,
                hash: PlainKey::generate_tenant().hash(),
                prefix: "hk_child".into(),
                created_at: 7,
                revoked_at: None,
            };
            (t, key)
        };
        store.create_tenant(&child, &key).await.expect("create");
        assert_eq!(
            store
                .list_sub_accounts(parent, &crate::model::PageQuery::first(10))
                .await
                .expect("list")
                .items,
            vec![child]
        );
        assert!(store
            .list_event_types(&crate::model::PageQuery::first(10))
            .await
            .expect("list")
            .items
            .is_empty());
        drop(store);

        let conn = Connection::open(&path).expect("open");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        // Opening again runs no step twice (a second ALTER TABLE ADD COLUMN would fail).
        drop(conn);
        open(&path).expect("reopen");
    }

    #[tokio::test]
    async fn a_new_file_gets_small_pages_and_an_old_one_keeps_its_own() {
        let page_size = |path: &Path| -> i64 {
            Connection::open(path)
                .expect("open")
                .pragma_query_value(None, "page_size", |row| row.get(0))
                .expect("page size")
        };
        let (_dir, path) = temp_db();
        drop(open(&path).expect("open"));
        assert_eq!(page_size(&path), PAGE_SIZE);

        let (_old_dir, old) = temp_db();
        Connection::open(&old)
            .expect("open")
            .execute_batch("PRAGMA page_size = 4096; CREATE TABLE kept (n INTEGER)")
            .expect("old file");
        let (store, _queue) = open(&old).expect("open an old file");
        assert!(crate::ports::EventTypeStore::list_event_types(
            store.as_ref(),
            &crate::model::PageQuery::first(10)
        )
        .await
        .expect("the schema was made on it")
        .items
        .is_empty());
        drop(store);
        assert_eq!(page_size(&old), 4096);
    }

    #[tokio::test]
    async fn refuses_a_newer_schema() {
        let (_dir, path) = temp_db();
        {
            let conn = Connection::open(&path).expect("open");
            conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .expect("set version");
        }
        assert!(open(&path).is_err());
    }
}
