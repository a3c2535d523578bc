//! [`Queue`] and [`PullQueue`] on SQS: batched sends with per-message delays (batches cut by
//! count and by size, and each message's fate told), long-polled receives, acks by receipt
//! handle, releases by changing visibility, and dead letters sent to the dead-letter queue
//! with their reason, and sequenced sends to an optional FIFO queue. SQS counts in whole
//! seconds, so delays and visibility timeouts round up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;

use super::sdk_error;
use crate::error::{Error, Result};
use crate::ports::{NotQueued, Outgoing, PullQueue, Queue, Received, Refusal, Sequenced, Unqueued};

/// SQS's longest delivery delay.
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// SQS's longest visibility timeout: 12 hours.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// SQS's largest batch, for sends, receives and deletes alike.
const MAX_BATCH: usize = 10;
/// SQS's largest message, and largest batch of messages in total: 1 MiB, counted as
/// [`message_size`] counts.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// The error codes with which SQS refuses a send for what a message is (its size or
/// content) rather than for the state of the queue: sending the same message again is
/// refused again. Matched on the last dotted part, as the query-compatible codes
/// (`AWS.SimpleQueueService.BatchRequestTooLong`) carry a prefix.
const MESSAGE_REFUSALS: [&str; 3] = [
    "BatchRequestTooLong",
    "InvalidMessageContents",
    "InvalidParameterValue",
];
/// How long a receive waits for a message when the queue is empty. Short, so a local
/// worker notices shutdown quickly; long enough not to poll in a tight loop.
const RECEIVE_WAIT_SECONDS: i32 = 1;
/// How long a received body is kept for [`PullQueue::dead_letter`] after the visibility
/// timeout it was received with: past that the receipt is stale anyway.
const RECEIPT_GRACE: Duration = Duration::from_secs(5 * 60);
/// The message attribute naming why a message was dead-lettered.
pub const REASON_ATTRIBUTE: &str = "reason";
/// Receives after which SQS moves a message to the dead-letter queue, in
/// [`create_queue_pair`]'s redrive policy (the same as the embedded queue's default).
pub const DEFAULT_MAX_RECEIVES: u32 = 10;

/// [`PullQueue`] on one SQS queue, with an optional dead-letter queue for
/// [`PullQueue::dead_letter`]. Clones share the record of received messages.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
    dead_letter_url: Option<String>,
    /// The FIFO queue [`Queue::send_sequenced`] sends to; without one the queue keeps no
    /// order.
    ordered_url: Option<String>,
    /// The bodies of messages received through this handle, by receipt handle:
    /// `dead_letter` gets only the receipt but must send the body on.
    in_flight: Arc<Mutex<HashMap<String, InFlight>>>,
    /// The queue's `maxReceiveCount`, once read (see [`SqsQueue::max_receives`]).
    max_receives: Arc<tokio::sync::OnceCell<Option<u32>>>,
}

#[derive(Debug)]
struct InFlight {
    body: String,
    /// When the entry may be dropped.
    keep_until: Instant,
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: String) -> Self {
        SqsQueue {
            client,
            queue_url,
            dead_letter_url: None,
            ordered_url: None,
            in_flight: Arc::default(),
            max_receives: Arc::default(),
        }
    }

    /// Where [`PullQueue::dead_letter`] sends messages; without one it fails and the
    /// message comes back until the queue's redrive policy moves it.
    pub fn with_dead_letter_url(mut self, url: String) -> Self {
        self.dead_letter_url = Some(url);
        self
    }

    /// The FIFO queue (`.fifo`, without content-based deduplication) that
    /// [`Queue::send_sequenced`] sends to, one message group per sequence.
    pub fn with_ordered_url(mut self, url: String) -> Self {
        self.ordered_url = Some(url);
        self
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// The receives after which the queue's redrive policy moves a message to its
    /// dead-letter queue (`maxReceiveCount`); `None` for a queue without one. Read from the
    /// queue on first use, then kept.
    pub async fn max_receives(&self) -> Result<Option<u32>> {
        let read = self.max_receives.get_or_try_init(|| async {
            let policy = self
                .client
                .get_queue_attributes()
                .queue_url(&self.queue_url)
                .attribute_names(QueueAttributeName::RedrivePolicy)
                .send()
                .await
                .map_err(|e| sdk_error("read the redrive policy", e))?
                .attributes
                .and_then(|mut a| a.remove(&QueueAttributeName::RedrivePolicy));
            policy.map_or(Ok(None), |p| max_receive_count(&p).map(Some))
        });
        read.await.copied()
    }

    fn in_flight(&self) -> MutexGuard<'_, HashMap<String, InFlight>> {
        // The map is a cache of bodies; one left half-updated by a panic is still usable.
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn forget(&self, receipts: &[String]) {
        let mut in_flight = self.in_flight();
        for r in receipts {
            in_flight.remove(r);
        }
    }
}

/// The `maxReceiveCount` of a redrive policy, given as a number or as text.
fn max_receive_count(policy: &str) -> Result<u32> {
    let bad = |why: &str| Error::backend("read the redrive policy", format!("{why}: {policy}"));
    let policy: serde_json::Value = serde_json::from_str(policy).map_err(|_| bad("not JSON"))?;
    let count = &policy["maxReceiveCount"];
    count
        .as_u64()
        .or_else(|| count.as_str().and_then(|s| s.trim().parse().ok()))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| bad("no maxReceiveCount"))
}

/// Whole seconds, rounded up so a wait is never cut short, and capped at `max`.
fn whole_seconds(d: Duration, max: Duration) -> i32 {
    let d = d.min(max);
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// The `DelaySeconds` of a message: SQS refuses more than 15 minutes, and longer waits
/// are the caller's to split (see [`Queue::max_delay`]).
fn delay_seconds(delay: Duration) -> i32 {
    whole_seconds(delay, MAX_DELAY)
}

/// The error code SQS gives a receipt handle that names no message it can act on: the
/// message is gone, or the handle is stale or expired. Nothing is lost by ignoring it:
/// a message still in the queue comes back when its visibility ends.
const RECEIPT_HANDLE_IS_INVALID: &str = "ReceiptHandleIsInvalid";

/// A message attribute, carried by SQS beside the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    /// `String` or `Number`, with or without a custom label (`Number.count`).
    pub data_type: String,
    /// The value as text, numbers included.
    pub value: String,
}

impl Attribute {
    pub fn string(name: &str, value: &str) -> Self {
        Attribute {
            name: name.to_owned(),
            data_type: "String".to_owned(),
            value: value.to_owned(),
        }
    }

    pub fn number(name: &str, value: u64) -> Self {
        Attribute {
            name: name.to_owned(),
            data_type: "Number".to_owned(),
            value: value.to_string(),
        }
    }
}

/// A message with its attributes, for [`SqsQueue::send_with_attributes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributed {
    pub message: Outgoing,
    pub attributes: Vec<Attribute>,
}

/// The size SQS counts for a message against its limits: the body, and each attribute's
/// name, data type and value, in bytes of UTF-8.
pub fn message_size(body: &str, attributes: &[Attribute]) -> usize {
    body.len()
        + attributes
            .iter()
            .map(|a| a.name.len() + a.data_type.len() + a.value.len())
            .sum::<usize>()
}

/// The longest message group and deduplication id SQS takes.
const MAX_FIFO_ID: usize = 128;

/// `id` as a FIFO message group or deduplication id: as it is when SQS takes it (at most
/// 128 printable ASCII characters), else the hex SHA-256 of it, so any sequence name or
/// ordering key maps to one stable id.
pub fn fifo_id(id: &str) -> String {
    let takes =
        !id.is_empty() && id.len() <= MAX_FIFO_ID && id.bytes().all(|b| b.is_ascii_graphic());
    if takes {
        id.to_owned()
    } else {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(id.as_bytes()))
    }
}

/// Cuts messages of these sizes into the batches SQS takes, in order: at most
/// [`MAX_BATCH`] messages and [`MAX_BATCH_BYTES`] in all in each. A message over that on
/// its own is in no batch: SQS refuses it whatever it is sent with.
fn batches(sizes: &[usize]) -> Vec<Vec<usize>> {
    let mut batches = Vec::new();
    let mut batch: Vec<usize> = Vec::new();
    let mut bytes = 0;
    for (i, &size) in sizes.iter().enumerate() {
        if size > MAX_BATCH_BYTES {
            continue;
        }
        if batch.len() == MAX_BATCH || bytes + size > MAX_BATCH_BYTES {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        batch.push(i);
        bytes += size;
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

/// Why a whole `SendMessageBatch` call failed.
enum BatchFailure {
    /// SQS refused the batch for what one of its messages is.
    Refused(String),
    /// SQS answered with another error: the queue is there but did not take the batch.
    Failed(String),
    /// No answer (timeout, connection, unreadable answer): the batch may or may not be
    /// queued, and SQS is likely out of reach for the batches after it too.
    Unreachable(String),
}

impl BatchFailure {
    /// What the failure means for the message at `index`.
    fn of(&self, index: usize) -> Unqueued {
        let (refusal, detail) = match self {
            BatchFailure::Refused(d) => (Refusal::Refused, d),
            BatchFailure::Failed(d) | BatchFailure::Unreachable(d) => (Refusal::Unavailable, d),
        };
        Unqueued {
            index,
            refusal,
            detail: detail.clone(),
        }
    }
}

fn batch_failure<R: std::fmt::Debug>(
    e: SdkError<aws_sdk_sqs::operation::send_message_batch::SendMessageBatchError, R>,
) -> BatchFailure {
    match e.as_service_error() {
        Some(refusal) => {
            let code = refusal.code().unwrap_or("unknown error");
            let detail = format!("{code}: {}", refusal.message().unwrap_or("no message"));
            let last = code.rsplit('.').next().unwrap_or(code);
            if MESSAGE_REFUSALS.contains(&last) {
                BatchFailure::Refused(detail)
            } else {
                BatchFailure::Failed(detail)
            }
        }
        None => BatchFailure::Unreachable(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()),
    }
}

impl SqsQueue {
    /// [`Queue::send`] with attributes on the messages. Batches are cut by count and by
    /// size as SQS counts it; a batch SQS refuses for one of its messages is sent again one
    /// message at a time, so that only that message is left off. Once SQS does not answer,
    /// the batches after are not tried and count as not queued.
    pub async fn send_with_attributes(
        &self,
        messages: Vec<Attributed>,
    ) -> std::result::Result<(), NotQueued> {
        let sent = messages.len();
        let sizes: Vec<usize> = messages
            .iter()
            .map(|m| message_size(&m.message.body, &m.attributes))
            .collect();
        let mut unqueued: Vec<Unqueued> = sizes
            .iter()
            .enumerate()
            .filter(|(_, size)| **size > MAX_BATCH_BYTES)
            .map(|(index, size)| Unqueued {
                index,
                refusal: Refusal::Refused,
                detail: format!("{size} bytes, over SQS's limit of {MAX_BATCH_BYTES}"),
            })
            .collect();
        let mut unreachable: Option<String> = None;
        for batch in batches(&sizes) {
            if let Some(why) = &unreachable {
                unqueued.extend(batch.iter().map(|&index| Unqueued {
                    index,
                    refusal: Refusal::Unavailable,
                    detail: format!("not sent after an earlier batch failed: {why}"),
                }));
                continue;
            }
            let failure = match self.send_batch(&messages, &batch).await {
                Ok(refused) => {
                    unqueued.extend(refused);
                    continue;
                }
                Err(failure) => failure,
            };
            if matches!(failure, BatchFailure::Refused(_)) && batch.len() > 1 {
                tracing::debug!("batch refused for one of its messages; sending them one by one");
                for &index in &batch {
                    match self.send_batch(&messages, &[index]).await {
                        Ok(refused) => unqueued.extend(refused),
                        Err(failure) => {
                            if let BatchFailure::Unreachable(why) = &failure {
                                unreachable = Some(why.clone());
                            }
                            unqueued.push(failure.of(index));
                        }
                    }
                }
                continue;
            }
            if let BatchFailure::Unreachable(why) = &failure {
                unreachable = Some(why.clone());
            }
            unqueued.extend(batch.iter().map(|&index| failure.of(index)));
        }
        if unqueued.is_empty() {
            return Ok(());
        }
        unqueued.sort_by_key(|u| u.index);
        Err(NotQueued { sent, unqueued })
    }

    /// One `SendMessageBatch` of the messages at `batch`; on an answer, the ones SQS did
    /// not take.
    async fn send_batch(
        &self,
        messages: &[Attributed],
        batch: &[usize],
    ) -> std::result::Result<Vec<Unqueued>, BatchFailure> {
        let mut entries = Vec::with_capacity(batch.len());
        for (n, &index) in batch.iter().enumerate() {
            let m = &messages[index];
            let mut entry = SendMessageBatchRequestEntry::builder()
                .id(n.to_string())
                .message_body(&m.message.body)
                .delay_seconds(delay_seconds(m.message.delay));
            for a in &m.attributes {
                let value = MessageAttributeValue::builder()
                    .data_type(&a.data_type)
                    .string_value(&a.value)
                    .build()
                    .map_err(|e| BatchFailure::Refused(format!("invalid attribute: {e}")))?;
                entry = entry.message_attributes(&a.name, value);
            }
            entries.push(
                entry
                    .build()
                    .map_err(|e| BatchFailure::Refused(format!("invalid message: {e}")))?,
            );
        }
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(batch_failure)?;
        Ok(not_taken(&out, batch))
    }
}

/// The messages of a batch SQS did not take: those it names as failed, and any it says
/// nothing about. The batch call succeeds even when some of its messages were refused.
fn not_taken(out: &SendMessageBatchOutput, batch: &[usize]) -> Vec<Unqueued> {
    batch
        .iter()
        .enumerate()
        .filter_map(|(n, &index)| {
            let id = n.to_string();
            if let Some(f) = out.failed().iter().find(|f| f.id() == id) {
                let refusal = if f.sender_fault() {
                    Refusal::Refused
                } else {
                    Refusal::Unavailable
                };
                let detail = format!("{}: {}", f.code(), f.message().unwrap_or("no message"));
                return Some(Unqueued {
                    index,
                    refusal,
                    detail,
                });
            }
            if out.successful().iter().any(|s| s.id() == id) {
                return None;
            }
            Some(Unqueued {
                index,
                refusal: Refusal::Unavailable,
                detail: "SQS's answer did not name the message".to_owned(),
            })
        })
        .collect()
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, messages: Vec<Outgoing>) -> std::result::Result<(), NotQueued> {
        let messages = messages
            .into_iter()
            .map(|message| Attributed {
                message,
                attributes: Vec::new(),
            })
            .collect();
        self.send_with_attributes(messages).await
    }

    fn keeps_order(&self) -> bool {
        self.ordered_url.is_some()
    }

    async fn send_sequenced(&self, messages: Vec<Sequenced>) -> std::result::Result<(), NotQueued> {
        let sent = messages.len();
        let Some(url) = &self.ordered_url else {
            return Err(NotQueued::all(
                sent,
                Refusal::Refused,
                "this deployment has no ordered queue",
            ));
        };
        let sizes: Vec<usize> = messages.iter().map(|m| m.body.len()).collect();
        let mut unqueued: Vec<Unqueued> = Vec::new();
        // Once a batch is not (wholly) queued, nothing after it is sent: a later message
        // of the same sequence must not get ahead of one that may be sent again.
        let mut stopped: Option<String> = None;
        let mut in_batch = vec![false; sent];
        for batch in batches(&sizes) {
            for &index in &batch {
                in_batch[index] = true;
            }
            if let Some(why) = &stopped {
                unqueued.extend(batch.iter().map(|&index| Unqueued {
                    index,
                    refusal: Refusal::Unavailable,
                    detail: format!("not sent after an earlier message was not queued: {why}"),
                }));
                continue;
            }
            let entries = batch
                .iter()
                .enumerate()
                .map(|(n, &index)| {
                    let m = &messages[index];
                    SendMessageBatchRequestEntry::builder()
                        .id(n.to_string())
                        .message_body(&m.body)
                        .message_group_id(fifo_id(&m.group))
                        .message_deduplication_id(fifo_id(&m.dedup))
                        .build()
                })
                .collect::<std::result::Result<Vec<_>, _>>();
            let entries = match entries {
                Ok(entries) => entries,
                Err(e) => {
                    let why = format!("invalid message: {e}");
                    unqueued.extend(batch.iter().map(|&index| Unqueued {
                        index,
                        refusal: Refusal::Refused,
                        detail: why.clone(),
                    }));
                    stopped = Some(why);
                    continue;
                }
            };
            let result = self
                .client
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await;
            match result {
                Ok(out) => {
                    let refused = not_taken(&out, &batch);
                    if let Some(first) = refused.first() {
                        stopped = Some(first.detail.clone());
                    }
                    unqueued.extend(refused);
                }
                Err(e) => {
                    let failure = batch_failure(e);
                    unqueued.extend(batch.iter().map(|&index| failure.of(index)));
                    stopped = Some(
                        unqueued
                            .last()
                            .map(|u| u.detail.clone())
                            .unwrap_or_default(),
                    );
                }
            }
        }
        // A message too large for SQS is in no batch.
        unqueued.extend(
            (0..sent)
                .filter(|&index| !in_batch[index])
                .map(|index| Unqueued {
                    index,
                    refusal: Refusal::Refused,
                    detail: format!("over SQS's limit of {MAX_BATCH_BYTES} bytes"),
                }),
        );
        if unqueued.is_empty() {
            return Ok(());
        }
        unqueued.sort_by_key(|u| u.index);
        Err(NotQueued { sent, unqueued })
    }

    fn max_delay(&self) -> Duration {
        MAX_DELAY
    }

    async fn probe(&self) -> Result<()> {
        self.client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| sdk_error("probe queue", e))?;
        Ok(())
    }
}

#[async_trait]
impl PullQueue for SqsQueue {
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Received>> {
        let visibility_seconds = whole_seconds(visibility, MAX_VISIBILITY);
        let mut received = Vec::new();
        let mut wait = RECEIVE_WAIT_SECONDS;
        while received.len() < max {
            let wanted = (max - received.len()).min(MAX_BATCH);
            let out = self
                .client
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(i32::try_from(wanted).unwrap_or(10))
                .wait_time_seconds(wait)
                .visibility_timeout(visibility_seconds)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
                .await
                .map_err(|e| sdk_error("receive from queue", e))?;
            let messages = out.messages.unwrap_or_default();
            let full = messages.len() >= wanted;
            for m in messages {
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|count| count.parse().ok())
                    .unwrap_or_else(|| {
                        tracing::warn!("SQS message without a receive count; counting 1");
                        1
                    });
                let (Some(body), Some(receipt)) = (m.body, m.receipt_handle) else {
                    return Err(Error::backend(
                        "receive from queue",
                        "a message without a body or receipt handle",
                    ));
                };
                received.push(Received {
                    body,
                    receipt,
                    receive_count,
                });
            }
            if !full {
                break;
            }
            // A full batch means more may be ready; take only what is there already
            // rather than waiting again.
            wait = 0;
        }

        let now = Instant::now();
        let keep_until = now + visibility.min(MAX_VISIBILITY) + RECEIPT_GRACE;
        let mut in_flight = self.in_flight();
        in_flight.retain(|_, f| f.keep_until > now);
        for r in &received {
            in_flight.insert(
                r.receipt.clone(),
                InFlight {
                    body: r.body.clone(),
                    keep_until,
                },
            );
        }
        Ok(received)
    }

    async fn ack(&self, receipts: &[String]) -> Result<()> {
        self.forget(receipts);
        for chunk in receipts.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .build()
                        .map_err(|e| Error::backend("build an SQS request", e))
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sdk_error("ack queue messages", e))?;
            let (stale, failed): (Vec<_>, Vec<_>) = out
                .failed()
                .iter()
                .partition(|f| f.code() == RECEIPT_HANDLE_IS_INVALID);
            if !stale.is_empty() {
                tracing::debug!(count = stale.len(), "acked with stale receipts; ignored");
            }
            if let Some(first) = failed.first() {
                return Err(Error::backend(
                    "ack queue messages",
                    format!(
                        "{} of {} deletes refused, the first with {}: {}",
                        failed.len(),
                        chunk.len(),
                        first.code(),
                        first.message().unwrap_or("no message"),
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn release(&self, receipt: &str, delay: Duration) -> Result<()> {
        self.forget(&[receipt.to_owned()]);
        let result = self
            .client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(whole_seconds(delay, MAX_VISIBILITY))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Its visibility already ended: the message is visible, or another receiver
            // holds it; either way there is nothing left to release.
            Err(e)
                if e.as_service_error().is_some_and(|e| {
                    e.is_message_not_inflight() || e.is_receipt_handle_is_invalid()
                }) =>
            {
                tracing::debug!("released with a stale receipt; ignored");
                Ok(())
            }
            Err(e) => Err(sdk_error("release queue message", e)),
        }
    }

    async fn dead_letter(&self, receipt: &str, reason: &str) -> Result<()> {
        let Some(dead_letter_url) = &self.dead_letter_url else {
            return Err(Error::backend(
                "dead-letter queue message",
                "no dead-letter queue configured",
            ));
        };
        let body = self
            .in_flight()
            .get(receipt)
            .map(|f| f.body.clone())
            .ok_or_else(|| {
                Error::backend(
                    "dead-letter queue message",
                    "unknown receipt: not received through this queue handle, or too long ago",
                )
            })?;
        // SQS refuses empty attribute values.
        let reason = if reason.is_empty() {
            "unspecified"
        } else {
            reason
        };
        let reason = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(reason)
            .build()
            .map_err(|e| Error::backend("build an SQS request", e))?;
        // Sent before the delete: a failure between the two leaves a duplicate in the
        // dead letters rather than losing the message.
        self.client
            .send_message()
            .queue_url(dead_letter_url)
            .message_body(body)
            .message_attributes(REASON_ATTRIBUTE, reason)
            .send()
            .await
            .map_err(|e| sdk_error("send to dead-letter queue", e))?;
        let deleted = self
            .client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await;
        match deleted {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_receipt_handle_is_invalid()) =>
            {
                tracing::debug!("dead-lettered with a stale receipt; the message may return");
            }
            Err(e) => return Err(sdk_error("delete dead-lettered message", e)),
        }
        self.forget(&[receipt.to_owned()]);
        Ok(())
    }

    async fn wait_ready(&self, max: Duration) {
        // `receive` long-polls, so there is nothing to wait for here; the short pause only
        // keeps a caller that loops on empty receives from spinning should a receive
        // return early.
        tokio::time::sleep(max.min(Duration::from_millis(200))).await;
    }
}

/// Creates a queue named `name` and its dead-letter queue `<name>-dlq`, wired by a
/// redrive policy of [`DEFAULT_MAX_RECEIVES`]; returns their URLs `(queue, dead letters)`.
/// For tests and local end-to-end runs; deployments get their queues from the template.
pub async fn create_queue_pair(client: &Client, name: &str) -> Result<(String, String)> {
    let dead_letter_url = client
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .map_err(|e| sdk_error("create dead-letter queue", e))?
        .queue_url
        .ok_or_else(|| Error::backend("create dead-letter queue", "no queue URL returned"))?;
    let dead_letter_arn = client
        .get_queue_attributes()
        .queue_url(&dead_letter_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| sdk_error("get dead-letter queue ARN", e))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| Error::backend("get dead-letter queue ARN", "no ARN returned"))?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dead_letter_arn,
        "maxReceiveCount": DEFAULT_MAX_RECEIVES,
    });
    let queue_url = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .map_err(|e| sdk_error("create queue", e))?
        .queue_url
        .ok_or_else(|| Error::backend("create queue", "no queue URL returned"))?;
    Ok((queue_url, dead_letter_url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_to_whole_seconds_and_cap_at_15_minutes() {
        assert_eq!(delay_seconds(Duration::ZERO), 0);
        assert_eq!(delay_seconds(Duration::from_millis(1)), 1);
        assert_eq!(delay_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(delay_seconds(Duration::from_secs(900)), 900);
        assert_eq!(delay_seconds(Duration::from_secs(20 * 60)), 900);
        assert_eq!(delay_seconds(Duration::MAX), 900);
    }

    #[test]
    fn message_size_counts_the_body_and_every_part_of_each_attribute_in_bytes() {
        assert_eq!(message_size("", &[]), 0);
        // UTF-8 bytes, not characters.
        assert_eq!(message_size("h\u{e9}llo", &[]), 6);
        let attributes = [
            Attribute::number("hookline-waits", 3),
            Attribute::string("reason", "gone \u{2013} 410"),
        ];
        assert_eq!(
            message_size("{}", &attributes),
            2 + ("hookline-waits".len() + "Number".len() + 1)
                + ("reason".len() + "String".len() + "gone \u{2013} 410".len())
        );
        assert_eq!("gone \u{2013} 410".len(), 12);
    }

    #[test]
    fn batches_are_cut_by_count_and_by_total_size() {
        // Ten 200 KiB messages: five fit in 1 MiB, six do not.
        let sizes = vec![200 * 1024; 10];
        assert_eq!(
            batches(&sizes),
            vec![vec![0, 1, 2, 3, 4], vec![5, 6, 7, 8, 9]]
        );
        // Small messages: ten to a batch.
        let lens: Vec<usize> = batches(&[100; 25]).iter().map(Vec::len).collect();
        assert_eq!(lens, vec![10, 10, 5]);
        // Exactly 1 MiB in all fits; one byte more starts the next batch.
        assert_eq!(
            batches(&[MAX_BATCH_BYTES - 1, 1, 1]),
            vec![vec![0, 1], vec![2]]
        );
        assert_eq!(batches(&[MAX_BATCH_BYTES, 1]), vec![vec![0], vec![1]]);
        // A message over the limit on its own goes in no batch; the others keep their order.
        assert_eq!(batches(&[5, MAX_BATCH_BYTES + 1, 7]), vec![vec![0, 2]]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn the_max_receive_count_is_read_as_a_number_or_as_text() {
        let arn = "arn:aws:sqs:us-east-1:123456789012:dlq";
        let policy = |count: &str| {
            format!(r#"{{"deadLetterTargetArn": "{arn}", "maxReceiveCount": {count}}}"#)
        };
        assert_eq!(max_receive_count(&policy("5")).unwrap(), 5);
        assert_eq!(max_receive_count(&policy("\"10\"")).unwrap(), 10);
        assert!(max_receive_count(&policy("\"many\"")).is_err());
        assert!(max_receive_count(r#"{"deadLetterTargetArn": "x"}"#).is_err());
        assert!(max_receive_count("not json").is_err());
    }

    #[test]
    fn visibility_rounds_up_and_caps_at_12_hours() {
        assert_eq!(whole_seconds(Duration::from_millis(300), MAX_VISIBILITY), 1);
        assert_eq!(
            whole_seconds(Duration::from_secs(86_400), MAX_VISIBILITY),
            43_200
        );
    }

    #[test]
    fn fifo_ids_are_kept_when_sqs_takes_them_and_hashed_otherwise() {
        assert_eq!(fifo_id("ten_1:ep_2:order-7"), "ten_1:ep_2:order-7");
        let long = "k".repeat(129);
        for bad in ["", "with space", "ключ", long.as_str()] {
            let id = fifo_id(bad);
            assert_eq!(id.len(), 64, "{bad:?}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(id, fifo_id(bad), "stable");
        }
        assert_ne!(fifo_id("with space"), fifo_id("with  space"));
        assert_eq!(fifo_id(&"k".repeat(128)), "k".repeat(128));
    }
}
