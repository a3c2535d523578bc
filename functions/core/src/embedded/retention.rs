//! Retention in local mode: deletes the log (messages with their deliveries and attempts)
//! once it is older than the retention, and idempotency keys once they expire, in small
//! batches in the background, as DynamoDB's TTL does for the Lambda functions.
//!
//! A message goes only when all of these hold:
//! - it was received more than the retention ago;
//! - every endpoint it fans out to has a delivery record and none is pending, so no retry
//!   is waiting for it (a target without a record has its first attempt still to come);
//!   both are checked in the transaction that deletes it;
//! - no task on the queue names it (an event task, or an attempt task, even of a settled
//!   delivery) and, while a producer's envelope waits on the queue, it was received before
//!   that envelope was sent. An event that came back after its message was deleted would
//!   be stored and sent again; in local mode the queue is in the same file, so instead of
//!   a minimum retention longer than the queue keeps messages (as on SQS) the queue is
//!   read at the start of each sweep. A task that names an old message can only be queued
//!   after that for a pending delivery (a retry, a replay reopening it), which the pending
//!   check sees.
//!
//! SQLite puts the pages of deleted rows on its free list and reuses them for new rows, so
//! under steady load the file stops growing at about what the retention holds; it does not
//! shrink (an offline `VACUUM` gives the space back).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection};
use serde::Deserialize;
use tokio::sync::watch;

use super::{duration_ms, Db, SqliteStore};
use crate::error::Result;
use crate::model::Millis;
use crate::ports::SharedClock;

/// Messages looked at per write: a few hundred row deletes at most, a few milliseconds of
/// the writer, so the commits of publishers that share its batch are not held up.
const MESSAGE_BATCH: usize = 128;

/// Idempotency keys deleted per write (small rows, one index).
const KEY_BATCH: usize = 512;

/// The pause between two batches of one sweep, so that a large backlog (a first sweep of
/// an old file) leaves the writer to publishers most of the time.
const BATCH_PAUSE: Duration = Duration::from_millis(5);

/// Sweeps run every tenth of the retention, within these bounds.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// What one sweep deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub messages: u64,
    pub idempotency_keys: u64,
}

/// Deletes what the retention no longer keeps; see the module documentation for the rule.
#[derive(Clone)]
pub struct Sweeper {
    db: Db,
    clock: SharedClock,
    keep: Option<Duration>,
}

impl SqliteStore {
    /// A sweeper on this store's file keeping the log for `keep` (`None`: for ever; expired
    /// idempotency keys are deleted either way), reading the time from `clock`.
    pub fn sweeper(&self, clock: SharedClock, keep: Option<Duration>) -> Sweeper {
        Sweeper {
            db: self.db.clone(),
            clock,
            keep,
        }
    }
}

impl Sweeper {
    /// How long [`Sweeper::run`] waits between sweeps: a tenth of the retention (so the
    /// log outlives it by that much at most), from 100 ms to a minute.
    pub fn interval(&self) -> Duration {
        self.keep
            .map_or(MAX_INTERVAL, |keep| keep / 10)
            .clamp(MIN_INTERVAL, MAX_INTERVAL)
    }

    /// Sweeps, then again every [`Sweeper::interval`], until `shutdown` turns true. A sweep
    /// under way stops after its current batch.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let interval = self.interval();
        loop {
            let stop = shutdown.clone();
            match self.sweep_until(move || *stop.borrow()).await {
                Ok(swept) if swept != Swept::default() => tracing::info!(
                    messages = swept.messages,
                    idempotency_keys = swept.idempotency_keys,
                    "retention sweep"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "retention sweep failed; the next one retries")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// One whole sweep.
    pub async fn sweep(&self) -> Result<Swept> {
        self.sweep_until(|| false).await
    }

    /// One sweep, ending early once `stop` says so (checked between batches).
    async fn sweep_until(&self, stop: impl Fn() -> bool) -> Result<Swept> {
        let mut swept = Swept::default();
        let now = self.clock.now();
        loop {
            let deleted = self
                .db
                .write("delete expired idempotency keys", move |conn| {
                    delete_expired_keys(conn, now, KEY_BATCH)
                })
                .await?;
            swept.idempotency_keys += deleted as u64;
            if deleted < KEY_BATCH || stop() {
                break;
            }
            tokio::time::sleep(BATCH_PAUSE).await;
        }
        let Some(keep) = self.keep else {
            return Ok(swept);
        };
        let cutoff = now.saturating_sub(duration_ms(keep));
        let queued = Arc::new(self.db.read("read the queue", queued_messages).await?);
        let mut after = Cursor::start();
        while !stop() {
            let (batch, queued) = (after.clone(), Arc::clone(&queued));
            let done = self
                .db
                .write("delete expired messages", move |conn| {
                    delete_expired_messages(conn, cutoff, &batch, MESSAGE_BATCH, &queued)
                })
                .await?;
            swept.messages += done.deleted;
            match done.last {
                Some(last) if done.scanned == MESSAGE_BATCH => after = last,
                _ => break,
            }
            tokio::time::sleep(BATCH_PAUSE).await;
        }
        Ok(swept)
    }
}

/// Deletes up to `limit` idempotency keys that expired by `now` (a claim treats them as
/// unbound already); returns how many.
fn delete_expired_keys(conn: &Connection, now: Millis, limit: usize) -> rusqlite::Result<usize> {
    conn.prepare_cached(&format!(
        "DELETE FROM idempotency_keys WHERE (tenant, key) IN ({EXPIRED_KEYS})"
    ))?
    .execute(params![now, limit])
}

/// Up to `?2` idempotency keys expired by `?1`, found through `idempotency_keys_by_expiry`.
const EXPIRED_KEYS: &str =
    "SELECT tenant, key FROM idempotency_keys WHERE expires_at <= ?1 LIMIT ?2";

/// Up to `?4` messages received before `?1`, after the cursor (`?2`, `?3`), oldest first,
/// each with whether its deliveries are settled: every target has a record and none is
/// pending. `received_at >= ?2` bounds the range of `messages_by_received`; the rest skips
/// the cursor's ties.
const CANDIDATES: &str = "SELECT m.id, m.received_at,
         json_array_length(m.targets)
             <= (SELECT COUNT(*) FROM deliveries d WHERE d.message = m.id)
         AND NOT EXISTS (
             SELECT 1 FROM deliveries d WHERE d.message = m.id AND d.status = 'pending'
         )
     FROM messages m
     WHERE m.received_at < ?1 AND m.received_at >= ?2
       AND (m.received_at > ?2 OR m.id > ?3)
     ORDER BY m.received_at, m.id
     LIMIT ?4";

/// Where a sweep has got to in `messages_by_received` order: the last message looked at.
#[derive(Debug, Clone)]
struct Cursor {
    received_at: Millis,
    id: String,
}

impl Cursor {
    fn start() -> Self {
        Cursor {
            received_at: Millis::MIN,
            id: String::new(),
        }
    }
}

/// What one batch did.
struct Batch {
    scanned: usize,
    deleted: u64,
    last: Option<Cursor>,
}

/// Looks at up to `limit` messages received before `cutoff`, after `after`, oldest first,
/// and deletes those the rule lets go, with their deliveries and attempts.
fn delete_expired_messages(
    conn: &Connection,
    cutoff: Millis,
    after: &Cursor,
    limit: usize,
    queued: &Queued,
) -> rusqlite::Result<Batch> {
    let candidates: Vec<(String, Millis, bool)> = conn
        .prepare_cached(CANDIDATES)?
        .query_map(params![cutoff, after.received_at, after.id, limit], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut deleted = 0;
    for (id, received_at, settled) in &candidates {
        if !settled || !queued.lets_go(id, *received_at) {
            continue;
        }
        for sql in [
            "DELETE FROM attempts WHERE message = ?1",
            "DELETE FROM deliveries WHERE message = ?1",
            "DELETE FROM messages WHERE id = ?1",
        ] {
            conn.prepare_cached(sql)?.execute([id])?;
        }
        deleted += 1;
    }
    Ok(Batch {
        scanned: candidates.len(),
        deleted,
        last: candidates.last().map(|(id, received_at, _)| Cursor {
            received_at: *received_at,
            id: id.clone(),
        }),
    })
}

/// The messages the queue may still bring back, as read at the start of a sweep.
#[derive(Debug, Default)]
struct Queued {
    /// Named by an event or attempt task.
    named: HashSet<String>,
    /// When the oldest producer envelope on the queue was sent: its message, stored when
    /// it is handled, is received after that (and its id is not known before).
    envelopes_since: Option<Millis>,
}

impl Queued {
    fn lets_go(&self, id: &str, received_at: Millis) -> bool {
        !self.named.contains(id) && self.envelopes_since.is_none_or(|since| received_at < since)
    }
}

/// The fields of a queue body that say which message it is about: a task of
/// [`crate::task`] (`kind` `event` with the message `id`, or `attempt` with `message`), or
/// else a producer's envelope. The payload is skipped, not kept.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    message: Option<String>,
    /// A page's events.
    #[serde(default)]
    events: Vec<Probe>,
}

fn queued_messages(conn: &Connection) -> rusqlite::Result<Queued> {
    let mut queued = Queued::default();
    let mut stmt = conn.prepare_cached("SELECT body, sent_at FROM queue")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let body: String = row.get(0)?;
        let sent_at: Millis = row.get(1)?;
        let probe = serde_json::from_str::<Probe>(&body).ok();
        let named = probe.and_then(|p| match p.kind.as_deref() {
            Some("event") => p.id.map(|id| vec![id]),
            Some("attempt") => p.message.map(|id| vec![id]),
            Some("page") => Some(p.events.into_iter().filter_map(|e| e.id).collect()),
            _ => None,
        });
        match named {
            Some(ids) => {
                queued.named.extend(ids);
            }
            // An envelope, or a body the worker will dead-letter: either way, nothing
            // received since it was sent goes.
            None => {
                queued.envelopes_since =
                    Some(queued.envelopes_since.map_or(sent_at, |s| s.min(sent_at)));
            }
        }
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use serde_json::value::RawValue;

    use super::*;
    use crate::embedded::{open, open_in_memory, SqliteQueue};
    use crate::ids::{AttemptId, EndpointId, MessageId, TenantId};
    use crate::model::{Attempt, AttemptOutcome, Delivery, DeliveryStatus, Message};
    use crate::ports::{Clock, DeliveryStore, MessageStore, Outgoing, PullQueue, Queue};
    use crate::task::{AttemptTask, EventTask, Task};

    const DAY: Millis = 86_400_000;
    const T0: Millis = 1_800_000_000_000;

    /// A clock the test moves by hand.
    struct FakeClock(AtomicI64);

    impl FakeClock {
        fn at(now: Millis) -> Arc<Self> {
            Arc::new(FakeClock(AtomicI64::new(now)))
        }

        fn set(&self, now: Millis) {
            self.0.store(now, Ordering::SeqCst);
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Millis {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// A data file, as local mode has it (reads on the read connections), whose queue and
    /// sweepers read the fake clock.
    struct Fixture {
        store: Arc<SqliteStore>,
        queue: Arc<SqliteQueue>,
        tenant: TenantId,
        clock: Arc<FakeClock>,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let (store, queue) = open(&dir.path().join("hookline.db")).expect("open");
            let clock = FakeClock::at(T0);
            let queue = Arc::new(queue.with_clock(clock.clone()));
            Fixture {
                store,
                queue,
                tenant: TenantId::new(),
                clock,
                _dir: dir,
            }
        }

        fn sweeper(&self, keep: Option<Duration>) -> Sweeper {
            self.store.sweeper(self.clock.clone(), keep)
        }

        /// A message received at `at`, fanned out to `targets` endpoints.
        async fn message(&self, at: Millis, targets: usize) -> Message {
            let m = Message {
                id: MessageId::new(),
                tenant: self.tenant,
                publisher: None,
                domain: None,
                event_type: "delivered".into(),
                payload: RawValue::from_string(r#"{"n":1}"#.into()).unwrap(),
                idempotency_key: None,
                received_at: at,
                targets: (0..targets).map(|_| EndpointId::new()).collect(),
            };
            self.store.insert_message(&m).await.expect("insert")
        }

        /// One attempt of the delivery of `m` to its `n`th target, leaving it `status`.
        async fn attempt(&self, m: &Message, n: usize, status: DeliveryStatus, at: Millis) {
            let endpoint = m.targets[n];
            let fresh = Delivery::fresh(m.id, endpoint, m.tenant, at);
            assert!(self
                .store
                .claim_delivery(&fresh, 0, at, at + 60_000)
                .await
                .expect("claim"));
            let settled = Delivery {
                status,
                attempts: 1,
                next_attempt_at: (status == DeliveryStatus::Pending).then_some(at + 3_600_000),
                lease_until: None,
                ..fresh
            };
            let attempt = Attempt {
                id: AttemptId::new(),
                message: m.id,
                endpoint,
                tenant: m.tenant,
                number: 1,
                at,
                status_code: Some(500),
                latency_ms: 3,
                response: "no".into(),
                error: None,
                outcome: AttemptOutcome::Retrying,
            };
            assert!(self
                .store
                .record_attempt(&settled, 0, Some(&attempt))
                .await
                .expect("record"));
        }

        /// A message received at `at` whose every delivery was made and settled.
        async fn settled(&self, at: Millis, targets: usize) -> Message {
            let m = self.message(at, targets).await;
            for n in 0..targets {
                self.attempt(&m, n, DeliveryStatus::Succeeded, at + 10)
                    .await;
            }
            m
        }

        async fn exists(&self, m: &Message) -> bool {
            self.store
                .get_message(m.tenant, m.id)
                .await
                .expect("get")
                .is_some()
        }

        async fn rows(&self, m: &Message) -> (usize, usize) {
            let deliveries = self.store.list_deliveries(m.id).await.expect("list");
            let attempts = self
                .store
                .list_attempts(m.tenant, m.id)
                .await
                .expect("list");
            (deliveries.len(), attempts.len())
        }

        async fn claim_key(&self, key: &str, ttl: Duration) -> Option<MessageId> {
            self.store
                .claim_idempotency_key(self.tenant, key, MessageId::new(), self.clock.now(), ttl)
                .await
                .expect("claim key")
        }
    }

    #[tokio::test]
    async fn old_settled_messages_go_with_their_log_and_recent_or_unsettled_ones_stay() {
        let f = Fixture::new();
        let keep = Duration::from_secs(30 * 86_400);
        let old = T0 - 40 * DAY;
        // Old and settled, with one, three and no targets.
        let gone = [
            f.settled(old, 1).await,
            f.settled(old + 1, 3).await,
            f.settled(old + 2, 0).await,
        ];
        // Failed for good counts as settled too.
        let failed = f.message(old + 3, 1).await;
        f.attempt(&failed, 0, DeliveryStatus::Failed, old + 3).await;
        // Recent: kept whatever its state.
        let recent = f.settled(T0 - 29 * DAY, 1).await;
        // Old, but a retry is pending.
        let retrying = f.message(old, 2).await;
        f.attempt(&retrying, 0, DeliveryStatus::Succeeded, old)
            .await;
        f.attempt(&retrying, 1, DeliveryStatus::Pending, old).await;
        // Old, but one target's first attempt has not been made.
        let unattempted = f.message(old, 2).await;
        f.attempt(&unattempted, 0, DeliveryStatus::Succeeded, old)
            .await;
        // Old and settled, but the queue still holds its event task, or an attempt task.
        let event_queued = f.settled(old, 1).await;
        let attempt_queued = f.settled(old, 1).await;
        let event = EventTask::new(
            event_queued.id,
            f.tenant,
            "delivered".into(),
            RawValue::from_string(r#"{"n":1}"#.into()).unwrap(),
            None,
            None,
            old,
            true,
        );
        let attempt = AttemptTask::new(
            attempt_queued.id,
            attempt_queued.targets[0],
            f.tenant,
            1,
            old,
        );
        f.queue
            .send(vec![
                Outgoing {
                    body: Task::Event(event).to_body(),
                    delay: Duration::ZERO,
                },
                Outgoing {
                    body: Task::Attempt(attempt).to_body(),
                    delay: Duration::from_secs(600),
                },
            ])
            .await
            .expect("send");

        let swept = f.sweeper(Some(keep)).sweep().await.expect("sweep");
        assert_eq!(swept.messages, gone.len() as u64 + 1);
        for m in gone.iter().chain([&failed]) {
            assert!(!f.exists(m).await, "{} was kept", m.id);
            assert_eq!(
                f.rows(m).await,
                (0, 0),
                "its deliveries and attempts went too"
            );
        }
        for m in [
            &recent,
            &retrying,
            &unattempted,
            &event_queued,
            &attempt_queued,
        ] {
            assert!(f.exists(m).await, "{} was deleted", m.id);
        }
        assert_eq!(f.rows(&retrying).await, (2, 2));
        assert_eq!(f.rows(&recent).await, (1, 1));

        // Once the retry settles and the queue is empty, they go too; the recent one goes
        // once the clock passes its retention.
        f.attempt_again(&retrying, 1).await;
        f.attempt(&unattempted, 1, DeliveryStatus::Failed, old)
            .await;
        let taken = f
            .queue
            .receive(10, Duration::from_secs(60))
            .await
            .expect("receive");
        assert_eq!(taken.len(), 1, "the delayed attempt task is not due yet");
        f.queue
            .ack(&taken.iter().map(|r| r.receipt.clone()).collect::<Vec<_>>())
            .await
            .expect("ack");
        let sweeper = f.sweeper(Some(keep));
        let swept = sweeper.sweep().await.expect("sweep");
        assert_eq!(swept.messages, 3, "retrying, unattempted and event_queued");
        assert!(f.exists(&attempt_queued).await);
        assert!(f.exists(&recent).await);
        f.clock.set(T0 + 2 * DAY);
        sweeper.sweep().await.expect("sweep");
        assert!(!f.exists(&recent).await);
        assert!(f.exists(&attempt_queued).await, "its task is still queued");
    }

    impl Fixture {
        /// A second attempt of the `n`th delivery of `m`, which settles it.
        async fn attempt_again(&self, m: &Message, n: usize) {
            let current = self
                .store
                .get_delivery(m.id, m.targets[n])
                .await
                .expect("get")
                .expect("a delivery");
            let settled = Delivery {
                status: DeliveryStatus::Succeeded,
                attempts: 2,
                next_attempt_at: None,
                ..current
            };
            assert!(self
                .store
                .record_attempt(&settled, 1, None)
                .await
                .expect("record"));
        }
    }

    #[tokio::test]
    async fn expired_idempotency_keys_go_and_live_ones_stay_whatever_the_retention() {
        let f = Fixture::new();
        let day = Duration::from_secs(86_400);
        assert_eq!(f.claim_key("short", Duration::from_secs(60)).await, None);
        assert_eq!(f.claim_key("long", day).await, None);
        f.clock.set(T0 + 61_000);
        let swept = f.sweeper(None).sweep().await.expect("sweep");
        assert_eq!(
            swept.idempotency_keys, 1,
            "the log kept for ever, the key not"
        );
        let swept = f
            .sweeper(Some(Duration::from_secs(1)))
            .sweep()
            .await
            .expect("sweep");
        assert_eq!(
            swept,
            Swept::default(),
            "a live key stays, even past a shorter retention"
        );
        // The live key still binds its message; the expired one is free again.
        assert!(f.claim_key("long", day).await.is_some());
        let keys: i64 = f
            .store
            .db
            .read("count", |conn| {
                conn.query_row("SELECT COUNT(*) FROM idempotency_keys", [], |r| r.get(0))
            })
            .await
            .expect("count");
        assert_eq!(keys, 1, "only the live key is left");
        assert_eq!(f.claim_key("short", day).await, None);
    }

    #[tokio::test]
    async fn a_sweep_goes_through_every_batch_past_messages_it_keeps() {
        let f = Fixture::new();
        let old = T0 - 10 * DAY;
        // A pending message first, then several batches' worth of settled ones, some
        // sharing a receive time (the cursor's ties).
        let pending = f.message(old - 1, 1).await;
        let mut settled = Vec::new();
        for n in 0..(MESSAGE_BATCH * 2 + 7) {
            settled.push(f.settled(old + (n / 3) as Millis, 1).await);
        }
        let many_keys = KEY_BATCH + 3;
        for n in 0..many_keys {
            f.claim_key(&format!("k{n}"), Duration::from_secs(1)).await;
        }
        f.clock.set(T0 + 1_000);
        let swept = f
            .sweeper(Some(Duration::from_secs(86_400)))
            .sweep()
            .await
            .expect("sweep");
        assert_eq!(
            swept,
            Swept {
                messages: settled.len() as u64,
                idempotency_keys: many_keys as u64,
            }
        );
        assert!(f.exists(&pending).await);
        for m in &settled {
            assert!(!f.exists(m).await);
        }
    }

    #[tokio::test]
    async fn a_producer_envelope_on_the_queue_keeps_what_was_received_since_it_was_sent() {
        let f = Fixture::new();
        let keep = Duration::from_secs(86_400);
        let before = f.settled(T0 - 3 * DAY, 1).await;
        f.clock.set(T0 - 2 * DAY);
        f.queue
            .send(vec![Outgoing {
                body: format!(
                    r#"{{"tenant":"{}","type":"opened","payload":{{}}}}"#,
                    f.tenant
                ),
                delay: Duration::ZERO,
            }])
            .await
            .expect("send");
        let after = f.settled(T0 - 2 * DAY + 1, 1).await;
        f.clock.set(T0);
        let swept = f.sweeper(Some(keep)).sweep().await.expect("sweep");
        assert_eq!(swept.messages, 1);
        assert!(!f.exists(&before).await);
        assert!(f.exists(&after).await);
    }

    #[test]
    fn the_probe_reads_the_message_of_each_task_kind() {
        let id = MessageId::new();
        let event = EventTask::new(
            id,
            TenantId::new(),
            "delivered".into(),
            RawValue::from_string(r#"{"id":"not this","message":"nor this"}"#.into()).unwrap(),
            None,
            Some("key".into()),
            T0,
            true,
        );
        let attempt = AttemptTask::new(id, EndpointId::new(), TenantId::new(), 2, T0);
        for task in [Task::Event(event), Task::Attempt(attempt)] {
            let conn = Connection::open_in_memory().expect("open");
            conn.execute_batch("CREATE TABLE queue (body TEXT, sent_at INTEGER)")
                .expect("schema");
            conn.execute(
                "INSERT INTO queue VALUES (?1, 5), ('not json', 9), ('{\"tenant\":\"t\"}', 7)",
                [task.to_body()],
            )
            .expect("insert");
            let queued = queued_messages(&conn).expect("read");
            assert_eq!(queued.named, HashSet::from([id.to_string()]));
            assert_eq!(queued.envelopes_since, Some(7));
        }
        // A page names each of its events.
        let tenant = TenantId::new();
        let ids = MessageId::page(2);
        let events = ids
            .iter()
            .map(|id| {
                let payload = RawValue::from_string(r#"{"id":"not this"}"#.into()).unwrap();
                EventTask::new(*id, tenant, "opened".into(), payload, None, None, T0, true)
            })
            .collect();
        let page = Task::Page(crate::task::PageTask::new(events).expect("page"));
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE queue (body TEXT, sent_at INTEGER)")
            .expect("schema");
        conn.execute("INSERT INTO queue VALUES (?1, 5)", [page.to_body()])
            .expect("insert");
        let queued = queued_messages(&conn).expect("read");
        let expected: HashSet<String> = ids.iter().map(|id| id.to_string()).collect();
        assert_eq!(queued.named, expected);
        assert_eq!(queued.envelopes_since, None);
    }

    #[test]
    fn sweeps_run_every_tenth_of_the_retention_within_bounds() {
        let (store, _queue) = open_in_memory().expect("open");
        let every = |keep: Option<Duration>| store.sweeper(FakeClock::at(0), keep).interval();
        assert_eq!(every(None), MAX_INTERVAL);
        assert_eq!(every(Some(Duration::from_secs(30 * 86_400))), MAX_INTERVAL);
        assert_eq!(every(Some(Duration::from_secs(10))), Duration::from_secs(1));
        assert_eq!(every(Some(Duration::from_millis(10))), MIN_INTERVAL);
    }

    /// The steps of SQLite's plan for `sql`.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain")
            .query_map(params![0, 0, "", 1], |row| row.get::<_, String>(3))
            .expect("plan")
            .collect::<rusqlite::Result<_>>()
            .expect("plan")
    }

    #[tokio::test]
    async fn the_sweep_reads_ranges_of_its_indexes_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _queue) = open(&dir.path().join("hookline.db")).expect("open");
        let (candidates, keys) = store
            .db
            .read("plan", |conn| {
                Ok((
                    plan(conn, CANDIDATES),
                    plan(conn, &EXPIRED_KEYS.replace("?2", "?4")),
                ))
            })
            .await
            .expect("plan");
        assert!(
            candidates.iter().any(|s| s.contains(
                "SEARCH m USING INDEX messages_by_received (received_at>? AND received_at<?)"
            )),
            "{candidates:?}"
        );
        assert!(
            !candidates.iter().any(|s| s.contains("TEMP B-TREE")),
            "no sort: {candidates:?}"
        );
        assert!(
            keys.iter()
                .any(|s| s.contains("idempotency_keys_by_expiry")),
            "{keys:?}"
        );
    }
}
