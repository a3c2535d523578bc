//! The queue ports on SQLite, with SQS semantics: delays, visibility timeouts, receipts
//! that go stale on redelivery, and a dead-letter table fed by a maximum receive count, so
//! local mode exercises the same paths as the Lambda functions on SQS.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::Notify;

use super::{duration_ms, Db};
use crate::error::{Error, Result};
use crate::model::Millis;
use crate::ports::{Outgoing, PullQueue, Queue, Received, SharedClock, SystemClock};

/// SQS's longest delivery delay; kept locally so long waits take the re-enqueue path.
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);

/// Receives after which a message is dead-lettered unless handled, like an SQS redrive
/// policy's `maxReceiveCount`.
pub const DEFAULT_MAX_RECEIVES: u32 = 10;

const MAX_RECEIVES_REASON: &str = "max receives exceeded";

/// [`PullQueue`] on the shared SQLite connection. Cheap handles on one queue can be made
/// with [`SqliteQueue::with_max_receives`] and [`SqliteQueue::with_clock`].
pub struct SqliteQueue {
    db: Db,
    /// Wakes this process's `wait_ready` callers when a message is sent or released.
    ready: Arc<Notify>,
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

impl SqliteQueue {
    pub(crate) fn new(db: Db) -> Self {
        SqliteQueue {
            db,
            ready: Arc::new(Notify::new()),
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
            clock: Arc::clone(&self.clock),
            max_receives: self.max_receives,
        }
    }

    /// Makes every received, unacknowledged message visible now. Local mode calls this at
    /// startup: one process owns the file, so nothing can still be in flight after a
    /// restart, and waiting out the old visibility timeouts would only delay deliveries.
    /// Messages waiting out a send delay or a release delay keep it.
    pub async fn reset_visibility(&self) -> Result<()> {
        let now = self.clock.now();
        self.db
            .call("reset queue visibility", move |conn| {
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
        self.count("count queue", "SELECT COUNT(*) FROM queue")
            .await
    }

    pub async fn dead_letter_count(&self) -> Result<usize> {
        self.count("count dead letters", "SELECT COUNT(*) FROM dead_letters")
            .await
    }

    /// The dead letters as (body, reason), oldest first.
    pub async fn list_dead_letters(&self) -> Result<Vec<(String, String)>> {
        self.db
            .call("list dead letters", |conn| {
                conn.prepare_cached("SELECT body, reason FROM dead_letters ORDER BY id")?
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect()
            })
            .await
    }

    async fn count(&self, context: &'static str, sql: &'static str) -> Result<usize> {
        self.db
            .call(context, move |conn| {
                conn.prepare_cached(sql)?.query_row([], |row| row.get(0))
            })
            .await
    }

    /// When the next message becomes visible (possibly in the past); `None` if empty.
    pub(super) async fn next_visible_at(&self) -> Result<Option<Millis>> {
        self.db
            .call("peek queue", |conn| {
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
            "INSERT INTO dead_letters (body, reason, receive_count, at)
             SELECT body, ?3, receive_count, ?4 FROM queue WHERE id = ?1 AND receive_count = ?2",
        )?
        .execute(params![receipt.id, receipt.receive_count, reason, now])?;
    if moved == 1 {
        conn.prepare_cached("DELETE FROM queue WHERE id = ?1")?
            .execute([receipt.id])?;
    }
    Ok(moved == 1)
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn send(&self, messages: Vec<Outgoing>) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        self.db
            .call("send to queue", move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO queue (body, visible_at, receive_count, in_flight, sent_at)
                         VALUES (?1, ?2, 0, 0, ?3)",
                    )?;
                    for m in messages {
                        let visible_at = now.saturating_add(duration_ms(m.delay.min(MAX_DELAY)));
                        insert.execute(params![m.body, visible_at, now])?;
                    }
                }
                tx.commit()
            })
            .await?;
        self.ready.notify_waiters();
        Ok(())
    }

    fn max_delay(&self) -> Duration {
        MAX_DELAY
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
        self.db
            .call("receive from queue", move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let due = tx
                    .prepare_cached(
                        "SELECT id, body, receive_count FROM queue WHERE visible_at <= ?1
                         ORDER BY visible_at, id LIMIT ?2",
                    )?
                    .query_map(params![now, max], |row| {
                        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get(2)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut received = Vec::with_capacity(due.len());
                for (id, body, receive_count) in due {
                    let seen = Receipt { id, receive_count };
                    if receive_count >= max_receives {
                        move_to_dead_letters(&tx, seen, MAX_RECEIVES_REASON, now)?;
                        continue;
                    }
                    let receive_count = receive_count + 1;
                    tx.prepare_cached(
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
                tx.commit()?;
                Ok(received)
            })
            .await
    }

    async fn ack(&self, receipts: &[String]) -> Result<()> {
        let receipts = receipts
            .iter()
            .map(|r| Receipt::parse(r))
            .collect::<Result<Vec<_>>>()?;
        if receipts.is_empty() {
            return Ok(());
        }
        self.db
            .call("ack queue messages", move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    // A stale receipt matches nothing: the message was received again and
                    // now belongs to that receiver.
                    let mut delete = tx
                        .prepare_cached("DELETE FROM queue WHERE id = ?1 AND receive_count = ?2")?;
                    for r in receipts {
                        delete.execute(params![r.id, r.receive_count])?;
                    }
                }
                tx.commit()
            })
            .await
    }

    async fn release(&self, receipt: &str, delay: Duration) -> Result<()> {
        let receipt = Receipt::parse(receipt)?;
        let visible_at = self.clock.now().saturating_add(duration_ms(delay));
        self.db
            .call("release queue message", move |conn| {
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
            .call("dead-letter queue message", move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                move_to_dead_letters(&tx, receipt, &reason, now)?;
                tx.commit()
            })
            .await
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
