//! The queue ports on SQLite, with SQS semantics: delays, visibility timeouts, receipts
//! that go stale on redelivery, and a dead-letter table fed by a maximum receive count, so
//! local mode exercises the same paths as the Lambda functions on SQS. Its ordered side
//! plays an SQS FIFO queue: a message of a sequence (`grp`) is parked, invisible, until
//! every message sent before it in that sequence is gone, so a sequence has one message
//! out at a time, and a restart finds each sequence as it was.

use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection};
use tokio::sync::Notify;

use super::{duration_ms, Db};
use crate::error::{Error, Result};
use crate::model::{Millis, Page, PageQuery};
use crate::ports::{
    DeadLetter, DeadLetters, NotQueued, Outgoing, PullQueue, Queue, Received, Refusal, Sequenced,
    SharedClock, SystemClock, MAX_PAGE, MAX_RECEIVES_REASON,
};

/// SQS's longest delivery delay; kept locally so long waits take the re-enqueue path.
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);

/// Receives after which a message is dead-lettered unless handled, like an SQS redrive
/// policy's `maxReceiveCount`.
pub const DEFAULT_MAX_RECEIVES: u32 = 10;

/// The receive limit of a message of a sequence, which is received once per attempt of
/// its delivery (its retries wait at the head of the sequence): the template's FIFO
/// redrive policy has the same.
pub const ORDERED_MAX_RECEIVES: u32 = 100;

/// The `visible_at` of a message of a sequence waiting for those before it.
const PARKED: Millis = Millis::MAX;

/// [`PullQueue`] on the shared SQLite database. Cheap handles on one queue can be made
/// with [`SqliteQueue::with_max_receives`] and [`SqliteQueue::with_clock`].
pub struct SqliteQueue {
    db: Db,
    /// Wakes this process's `wait_ready` callers when a message is sent or released.
    ready: Arc<Notify>,
    /// Messages sent for handling now and not yet received: see [`SqliteQueue::waiting`].
    waiting: Arc<Waiting>,
    /// Above this many waiting messages, publishers are asked to come back later.
    max_waiting: Option<usize>,
    clock: SharedClock,
    max_receives: u32,
}

/// A receipt names one receive of one row: `{id}:{receive_count}`. The count makes a
/// receipt stale once the message is received again.
#[derive(Debug, Clone, Copy)]
struct Receipt {
    id: i64,
    receive_count: u32,
}

impl Receipt {
    fn parse(s: &str) -> Result<Self> {
        let parsed = s.split_once(':').and_then(|(id, count)| {
            Some(Receipt {
                id: id.parse().ok()?,
                receive_count: count.parse().ok()?,
            })
        });
        parsed.ok_or_else(|| Error::invalid("invalid_receipt", format!("bad receipt {s:?}")))
    }
}

/// The count behind [`SqliteQueue::waiting`]: raised by sends without a delay, lowered by
/// the first receive of such a message, each in the writer as its statements succeed, so
/// that a caller that stops waiting cannot leave it off (a failed commit can, by its
/// batch). Signed, so that a stray decrement reads as zero instead of wrapping.
#[derive(Debug, Default)]
struct Waiting(AtomicIsize);

impl Waiting {
    fn new(stored: usize) -> Self {
        Waiting(AtomicIsize::new(
            isize::try_from(stored).unwrap_or(isize::MAX),
        ))
    }

    fn add(&self, n: usize) {
        self.0
            .fetch_add(isize::try_from(n).unwrap_or(isize::MAX), Ordering::Relaxed);
    }

    fn remove(&self, n: usize) {
        self.0
            .fetch_sub(isize::try_from(n).unwrap_or(isize::MAX), Ordering::Relaxed);
    }

    fn get(&self) -> usize {
        usize::try_from(self.0.load(Ordering::Relaxed)).unwrap_or(0)
    }
}

/// Seconds a publisher turned away by a full queue is asked to wait.
pub const PUSH_BACK: Duration = Duration::from_secs(1);

/// Messages sent without a delay that no receiver has taken yet.
pub(super) fn waiting_messages(conn: &Connection) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "SELECT COUNT(*) FROM queue
         WHERE receive_count = 0 AND visible_at <= sent_at AND grp IS NULL",
    )?
    .query_row([], |row| row.get(0))
}

/// Messages in the queue table, in flight or delayed included.
pub(super) fn stored_messages(conn: &Connection) -> rusqlite::Result<usize> {
    conn.prepare_cached("SELECT COUNT(*) FROM queue")?
        .query_row([], |row| row.get(0))
}

impl SqliteQueue {
    /// The queue on `db`, whose table holds `waiting` messages not received yet.
    pub(crate) fn new(db: Db, waiting: usize) -> Self {
        SqliteQueue {
            db,
            ready: Arc::new(Notify::new()),
            waiting: Arc::new(Waiting::new(waiting)),
            max_waiting: None,
            clock: Arc::new(SystemClock),
            max_receives: DEFAULT_MAX_RECEIVES,
        }
    }

    /// A handle on the same queue that dead-letters a message instead of receiving it for
    /// the `(n + 1)`th time.
    pub fn with_max_receives(&self, n: u32) -> Self {
        SqliteQueue {
            max_receives: n,
            ..self.handle()
        }
    }

    /// A handle on the same queue that turns publishers away (see [`Queue::push_back`])
    /// while more than `max` messages wait for a receiver; `None` takes everything.
    pub fn with_max_waiting(&self, max: Option<usize>) -> Self {
        SqliteQueue {
            max_waiting: max,
            ..self.handle()
        }
    }

    /// A handle on the same queue that reads the time from `clock`.
    pub fn with_clock(&self, clock: SharedClock) -> Self {
        SqliteQueue {
            clock,
            ..self.handle()
        }
    }

    fn handle(&self) -> Self {
        SqliteQueue {
            db: self.db.clone(),
            ready: Arc::clone(&self.ready),
            waiting: Arc::clone(&self.waiting),
            max_waiting: self.max_waiting,
            clock: Arc::clone(&self.clock),
            max_receives: self.max_receives,
        }
    }

    /// Messages sent for handling now that no receiver has taken yet (delayed sends and
    /// released retries are not counted): the work publishers are ahead by. Counted in
    /// memory by this process, so it costs nothing to read on every publish; exact while
    /// this process is the file's only writer. A cue for back-pressure, not an inventory
    /// (see [`SqliteQueue::depth`]).
    pub fn waiting(&self) -> usize {
        self.waiting.get()
    }

    /// Makes every received, unacknowledged message visible now. Local mode calls this at
    /// startup: one process owns the file, so nothing can still be in flight after a
    /// restart, and waiting out the old visibility timeouts would only delay deliveries.
    /// Messages waiting out a send delay or a release delay keep it.
    pub async fn reset_visibility(&self) -> Result<()> {
        let now = self.clock.now();
        self.db
            .write("reset queue visibility", move |conn| {
                conn.prepare_cached(
                    "UPDATE queue SET visible_at = ?1, in_flight = 0
                     WHERE in_flight = 1 AND visible_at > ?1",
                )?
                .execute([now])?;
                Ok(())
            })
            .await?;
        self.ready.notify_waiters();
        Ok(())
    }

    /// Messages in the queue, in flight or delayed included.
    pub async fn depth(&self) -> Result<usize> {
        self.db.read("count queue", stored_messages).await
    }

    /// Sets the queue's gauges (see [`crate::metrics::queue`]): its messages, and how long
    /// ago the oldest of them was sent (zero when it is empty). Read when they are
    /// scraped, so they cost nothing in between.
    pub async fn record_gauges(&self) -> Result<()> {
        let (depth, oldest): (usize, Option<Millis>) = self
            .db
            .read("measure queue", |conn| {
                conn.prepare_cached("SELECT COUNT(*), MIN(sent_at) FROM queue")?
                    .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
            })
            .await?;
        let age = oldest.map_or(0, |sent| self.clock.now().saturating_sub(sent).max(0));
        crate::metrics::queue(depth, Duration::from_millis(age as u64));
        Ok(())
    }

    pub async fn dead_letter_count(&self) -> Result<usize> {
        self.count("count dead letters", "SELECT COUNT(*) FROM dead_letters")
            .await
    }

    /// Every dead letter as (body, reason), oldest first.
    pub async fn dead_letter_reasons(&self) -> Result<Vec<(String, String)>> {
        self.db
            .read("list dead letters", |conn| {
                conn.prepare_cached("SELECT body, reason FROM dead_letters ORDER BY id")?
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect()
            })
            .await
    }

    async fn count(&self, context: &'static str, sql: &'static str) -> Result<usize> {
        self.db
            .read(context, move |conn| {
                conn.prepare_cached(sql)?.query_row([], |row| row.get(0))
            })
            .await
    }

    /// When the next message becomes visible (possibly in the past); `None` if empty.
    pub(super) async fn next_visible_at(&self) -> Result<Option<Millis>> {
        self.db
            .read("peek queue", |conn| {
                conn.prepare_cached("SELECT MIN(visible_at) FROM queue")?
                    .query_row([], |row| row.get(0))
            })
            .await
    }
}

/// Moves the row a receipt names to the dead letters; false if the receipt is stale.
fn move_to_dead_letters(
    conn: &Connection,
    receipt: Receipt,
    reason: &str,
    now: Millis,
) -> rusqlite::Result<bool> {
    let moved = conn
        .prepare_cached(
            "INSERT INTO dead_letters (body, reason, receive_count, at, grp)
             SELECT body, ?3, receive_count, ?4, grp FROM queue
             WHERE id = ?1 AND receive_count = ?2",
        )?
        .execute(params![receipt.id, receipt.receive_count, reason, now])?;
    if moved == 1 {
        remove(conn, receipt.id, now)?;
    }
    Ok(moved == 1)
}

/// Deletes a row, and makes the next message of its sequence (if it has one) visible.
fn remove(conn: &Connection, id: i64, now: Millis) -> rusqlite::Result<()> {
    let group: Option<String> = conn
        .prepare_cached("DELETE FROM queue WHERE id = ?1 RETURNING grp")?
        .query_row([id], |row| row.get(0))
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    if let Some(group) = group {
        conn.prepare_cached(
            "UPDATE queue SET visible_at = ?2
             WHERE id = (SELECT MIN(id) FROM queue WHERE grp = ?1) AND visible_at = ?3",
        )?
        .execute(params![group, now, PARKED])?;
    }
    Ok(())
}

/// Appends a message to its sequence: visible at `now` if the sequence is empty, else
/// parked behind the others.
fn append(conn: &Connection, body: &str, group: &str, now: Millis) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO queue (body, visible_at, receive_count, in_flight, sent_at, grp)
         SELECT ?1, CASE WHEN EXISTS (SELECT 1 FROM queue WHERE grp = ?2) THEN ?4 ELSE ?3 END,
                0, 0, ?3, ?2",
    )?
    .execute(params![body, group, now, PARKED])?;
    Ok(())
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn send(&self, messages: Vec<Outgoing>) -> std::result::Result<(), NotQueued> {
        if messages.is_empty() {
            return Ok(());
        }
        let sent = messages.len();
        let now = self.clock.now();
        let waiting = Arc::clone(&self.waiting);
        self.db
            .write("send to queue", move |conn| {
                let mut insert = conn.prepare_cached(
                    "INSERT INTO queue (body, visible_at, receive_count, in_flight, sent_at)
                     VALUES (?1, ?2, 0, 0, ?3)",
                )?;
                let now_due = messages.iter().filter(|m| m.delay.is_zero()).count();
                for m in messages {
                    let visible_at = now.saturating_add(duration_ms(m.delay.min(MAX_DELAY)));
                    insert.execute(params![m.body, visible_at, now])?;
                }
                waiting.add(now_due);
                Ok(())
            })
            .await
            // One transaction: either every message is stored or none is.
            .map_err(|e| NotQueued::all(sent, Refusal::Unavailable, e))?;
        self.ready.notify_waiters();
        Ok(())
    }

    fn keeps_order(&self) -> bool {
        true
    }

    async fn send_sequenced(&self, messages: Vec<Sequenced>) -> std::result::Result<(), NotQueued> {
        if messages.is_empty() {
            return Ok(());
        }
        let sent = messages.len();
        let now = self.clock.now();
        // Not counted as waiting: a sequence held up by a failing receiver must not turn
        // every publisher away.
        self.db
            .write("send to ordered queue", move |conn| {
                for m in messages {
                    append(conn, &m.body, &m.group, now)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| NotQueued::all(sent, Refusal::Unavailable, e))?;
        self.ready.notify_waiters();
        Ok(())
    }

    fn max_delay(&self) -> Duration {
        MAX_DELAY
    }

    async fn probe(&self) -> Result<()> {
        self.db.probe("queue").await
    }

    fn push_back(&self) -> Option<Duration> {
        let max = self.max_waiting?;
        (self.waiting() > max).then_some(PUSH_BACK)
    }
}

#[async_trait]
impl DeadLetters for SqliteQueue {
    async fn list_dead_letters(&self, page: &PageQuery) -> Result<Page<DeadLetter>> {
        // Rows are numbered in the order they came: the id alone places the cursor.
        let after: i64 = match &page.after {
            None => 0,
            Some(cursor) => DeadLetter::parse_cursor(cursor)
                .and_then(|(_, id)| id.parse().ok())
                .ok_or_else(|| {
                    Error::invalid("invalid_cursor", "cursor is not one a listing gave")
                })?,
        };
        let limit = page.limit.clamp(1, MAX_PAGE);
        let mut items: Vec<DeadLetter> = self
            .db
            .read("list dead letters", move |conn| {
                conn.prepare_cached(
                    "SELECT id, body, reason, at FROM dead_letters WHERE id > ?1
                     ORDER BY id LIMIT ?2",
                )?
                .query_map(params![after, limit + 1], |row| {
                    Ok(DeadLetter {
                        id: row.get::<_, i64>(0)?.to_string(),
                        body: row.get(1)?,
                        reason: row.get(2)?,
                        at: row.get(3)?,
                    })
                })?
                .collect()
            })
            .await?;
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = more.then(|| items.last().map(DeadLetter::cursor)).flatten();
        Ok(Page { items, next_cursor })
    }

    async fn redrive(&self, ids: Option<&[String]>) -> Result<Vec<String>> {
        // An id that is not a row's cannot name one: it is left out like a missing one.
        let ids: Option<Vec<i64>> =
            ids.map(|ids| ids.iter().filter_map(|id| id.parse().ok()).collect());
        let now = self.clock.now();
        let waiting = Arc::clone(&self.waiting);
        let moved = self
            .db
            .write("redrive dead letters", move |conn| {
                let rows: Vec<i64> = match ids {
                    None => conn
                        .prepare_cached("SELECT id FROM dead_letters ORDER BY id")?
                        .query_map([], |row| row.get(0))?
                        .collect::<rusqlite::Result<_>>()?,
                    Some(ids) => ids,
                };
                let mut moved = Vec::new();
                let mut unordered = 0;
                for id in rows {
                    let letter: Option<(String, Option<String>)> = conn
                        .prepare_cached("SELECT body, grp FROM dead_letters WHERE id = ?1")?
                        .query_map([id], |row| Ok((row.get(0)?, row.get(1)?)))?
                        .next()
                        .transpose()?;
                    let Some((body, group)) = letter else {
                        continue;
                    };
                    // A new arrival: received afresh, its receives counted from zero; one
                    // of a sequence goes to its end.
                    match group {
                        Some(group) => append(conn, &body, &group, now)?,
                        None => {
                            conn.prepare_cached(
                                "INSERT INTO queue (body, visible_at, receive_count, in_flight, sent_at)
                                 VALUES (?1, ?2, 0, 0, ?2)",
                            )?
                            .execute(params![body, now])?;
                            unordered += 1;
                        }
                    }
                    conn.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?
                        .execute([id])?;
                    moved.push(id.to_string());
                }
                waiting.add(unordered);
                Ok(moved)
            })
            .await?;
        if !moved.is_empty() {
            self.ready.notify_waiters();
        }
        Ok(moved)
    }
}

#[async_trait]
impl PullQueue for SqliteQueue {
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Received>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let hidden_until = now.saturating_add(duration_ms(visibility));
        let max_receives = self.max_receives;
        let waiting = Arc::clone(&self.waiting);
        let (received, dead) = self
            .db
            .write("receive from queue", move |conn| {
                let due = conn
                    .prepare_cached(
                        "SELECT id, body, receive_count,
                                receive_count = 0 AND visible_at <= sent_at AND grp IS NULL,
                                grp IS NOT NULL
                         FROM queue WHERE visible_at <= ?1 ORDER BY visible_at, id LIMIT ?2",
                    )?
                    .query_map(params![now, max], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, String>(1)?,
                            row.get(2)?,
                            row.get::<_, bool>(3)?,
                            row.get::<_, bool>(4)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut received = Vec::with_capacity(due.len());
                let mut dead = 0;
                let taken = due.iter().filter(|(_, _, _, fresh, _)| *fresh).count();
                for (id, body, receive_count, _, grouped) in due {
                    let seen = Receipt { id, receive_count };
                    let limit = if grouped {
                        max_receives.max(ORDERED_MAX_RECEIVES)
                    } else {
                        max_receives
                    };
                    if receive_count >= limit {
                        dead += usize::from(move_to_dead_letters(
                            conn,
                            seen,
                            MAX_RECEIVES_REASON,
                            now,
                        )?);
                        continue;
                    }
                    let receive_count = receive_count + 1;
                    conn.prepare_cached(
                        "UPDATE queue SET visible_at = ?2, receive_count = ?3, in_flight = 1
                         WHERE id = ?1",
                    )?
                    .execute(params![id, hidden_until, receive_count])?;
                    received.push(Received {
                        body,
                        receipt: format!("{id}:{receive_count}"),
                        receive_count,
                    });
                }
                waiting.remove(taken);
                Ok((received, dead))
            })
            .await?;
        for _ in 0..dead {
            crate::metrics::event_dead_lettered("max_receives");
        }
        Ok(received)
    }

    async fn ack(&self, receipts: &[String]) -> Result<()> {
        let receipts = receipts
            .iter()
            .map(|r| Receipt::parse(r))
            .collect::<Result<Vec<_>>>()?;
        if receipts.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let next_of_sequence = self
            .db
            .write("ack queue messages", move |conn| {
                // A stale receipt matches nothing: the message was received again and now
                // belongs to that receiver.
                let mut current = conn.prepare_cached(
                    "SELECT grp IS NOT NULL FROM queue WHERE id = ?1 AND receive_count = ?2",
                )?;
                let mut promoted = false;
                for r in receipts {
                    let grouped: Option<bool> = current
                        .query_map(params![r.id, r.receive_count], |row| row.get(0))?
                        .next()
                        .transpose()?;
                    if let Some(grouped) = grouped {
                        remove(conn, r.id, now)?;
                        promoted |= grouped;
                    }
                }
                Ok(promoted)
            })
            .await?;
        if next_of_sequence {
            self.ready.notify_waiters();
        }
        Ok(())
    }

    async fn release(&self, receipt: &str, delay: Duration) -> Result<()> {
        let receipt = Receipt::parse(receipt)?;
        let visible_at = self.clock.now().saturating_add(duration_ms(delay));
        self.db
            .write("release queue message", move |conn| {
                conn.prepare_cached(
                    "UPDATE queue SET visible_at = ?3, in_flight = 0
                     WHERE id = ?1 AND receive_count = ?2",
                )?
                .execute(params![
                    receipt.id,
                    receipt.receive_count,
                    visible_at
                ])?;
                Ok(())
            })
            .await?;
        self.ready.notify_waiters();
        Ok(())
    }

    async fn dead_letter(&self, receipt: &str, reason: &str) -> Result<()> {
        let receipt = Receipt::parse(receipt)?;
        let reason = reason.to_owned();
        let now = self.clock.now();
        self.db
            .write("dead-letter queue message", move |conn| {
                move_to_dead_letters(conn, receipt, &reason, now)?;
                Ok(())
            })
            .await?;
        // The next message of its sequence, if it had one, is visible now.
        self.ready.notify_waiters();
        Ok(())
    }

    async fn wait_ready(&self, max: Duration) {
        // Registered before looking at the table, so a send between the look and the
        // sleep still wakes us.
        let notified = self.ready.notified();
        let wait = match self.next_visible_at().await {
            Ok(Some(at)) => {
                let until = u64::try_from(at.saturating_sub(self.clock.now())).unwrap_or(0);
                Duration::from_millis(until).min(max)
            }
            Ok(None) => max,
            Err(e) => {
                tracing::warn!(error = %e, "cannot peek at the queue; waiting the full time");
                max
            }
        };
        if wait.is_zero() {
            return;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
