//! [`Queue`] and [`PullQueue`] on SQS: batched sends with per-message delays, long-polled
//! receives, acks by receipt handle, releases by changing visibility, and dead letters
//! sent to the dead-letter queue with their reason. SQS counts in whole seconds, so
//! delays and visibility timeouts round up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;

use super::sdk_error;
use crate::error::{Error, Result};
use crate::ports::{Outgoing, PullQueue, Queue, Received};

/// SQS's longest delivery delay.
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// SQS's longest visibility timeout: 12 hours.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// SQS's largest batch, for sends, receives and deletes alike.
const MAX_BATCH: usize = 10;
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
    /// The bodies of messages received through this handle, by receipt handle:
    /// `dead_letter` gets only the receipt but must send the body on.
    in_flight: Arc<Mutex<HashMap<String, InFlight>>>,
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
            in_flight: Arc::default(),
        }
    }

    /// Where [`PullQueue::dead_letter`] sends messages; without one it fails and the
    /// message comes back until the queue's redrive policy moves it.
    pub fn with_dead_letter_url(mut self, url: String) -> Self {
        self.dead_letter_url = Some(url);
        self
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
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

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, messages: Vec<Outgoing>) -> Result<()> {
        for chunk in messages.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&m.body)
                        .delay_seconds(delay_seconds(m.delay))
                        .build()
                        .map_err(|e| Error::backend("build an SQS request", e))
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sdk_error("send to queue", e))?;
            // A batch call succeeds even when some of its messages were refused.
            if let Some(first) = out.failed().first() {
                return Err(Error::backend(
                    "send to queue",
                    format!(
                        "{} of {} messages refused, the first with {}: {}",
                        out.failed().len(),
                        chunk.len(),
                        first.code(),
                        first.message().unwrap_or("no message"),
                    ),
                ));
            }
        }
        Ok(())
    }

    fn max_delay(&self) -> Duration {
        MAX_DELAY
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
    fn visibility_rounds_up_and_caps_at_12_hours() {
        assert_eq!(whole_seconds(Duration::from_millis(300), MAX_VISIBILITY), 1);
        assert_eq!(
            whole_seconds(Duration::from_secs(86_400), MAX_VISIBILITY),
            43_200
        );
    }
}
