//! [`DeadLetters`] on the SQS dead-letter queue: listing by receiving every message under a
//! short visibility timeout and making it visible again, and redrive as a send to the
//! events queue followed by a delete. SQS has no way to page through a queue, so each
//! listing scans it (up to [`MAX_SCAN`] messages) and pages over what it saw in send order.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageSystemAttributeName,
};
use aws_sdk_sqs::Client;

use super::sdk_error;
use super::sqs::REASON_ATTRIBUTE;
use crate::error::{Error, Result};
use crate::model::{Millis, Page, PageQuery};
use crate::ports::{DeadLetter, DeadLetters, MAX_PAGE, MAX_RECEIVES_REASON};

/// The most dead letters one listing or redrive looks at. Past it a listing shows the
/// first ones received and a redrive of all of them takes several calls.
pub const MAX_SCAN: usize = 2_000;
/// How long a scan hides what it received from other scans (and from nobody else: the
/// dead-letter queue has no consumer).
const SCAN_VISIBILITY: Duration = Duration::from_secs(30);

/// The dead-letter queue at `dead_letter_url`, redriven to `events_url`.
#[derive(Debug, Clone)]
pub struct SqsDeadLetters {
    client: Client,
    dead_letter_url: String,
    events_url: String,
}

/// One message of a scan, with its receipt for the delete or the release.
struct Scanned {
    letter: DeadLetter,
    receipt: String,
}

impl SqsDeadLetters {
    pub fn new(client: Client, dead_letter_url: String, events_url: String) -> Self {
        SqsDeadLetters {
            client,
            dead_letter_url,
            events_url,
        }
    }

    /// Receives every message of the dead-letter queue, oldest sent first.
    async fn scan(&self) -> Result<Vec<Scanned>> {
        let mut seen: Vec<Scanned> = Vec::new();
        while seen.len() < MAX_SCAN {
            let out = self
                .client
                .receive_message()
                .queue_url(&self.dead_letter_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .visibility_timeout(SCAN_VISIBILITY.as_secs() as i32)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .message_attribute_names(REASON_ATTRIBUTE)
                .send()
                .await
                .map_err(|e| sdk_error("receive from dead-letter queue", e))?;
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                if let Some(s) = scanned(m) {
                    // A message seen twice (its visibility ran out mid-scan) is listed once.
                    if !seen.iter().any(|x| x.letter.id == s.letter.id) {
                        seen.push(s);
                    }
                }
            }
        }
        seen.sort_by(|a, b| (a.letter.at, &a.letter.id).cmp(&(b.letter.at, &b.letter.id)));
        Ok(seen)
    }

    /// Makes scanned messages visible again at once.
    async fn release(&self, receipts: Vec<String>) -> Result<()> {
        for chunk in receipts.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .visibility_timeout(0)
                        .build()
                        .map_err(|e| Error::backend("build an SQS request", e))
                })
                .collect::<Result<Vec<_>>>()?;
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.dead_letter_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sdk_error("release dead letters", e))?;
        }
        Ok(())
    }
}

fn scanned(m: Message) -> Option<Scanned> {
    let at: Millis = m
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let reason = m
        .message_attributes()
        .and_then(|a| a.get(REASON_ATTRIBUTE))
        .and_then(|v| v.string_value())
        .unwrap_or(MAX_RECEIVES_REASON)
        .to_string();
    Some(Scanned {
        letter: DeadLetter {
            id: m.message_id?,
            reason,
            at,
            body: m.body.unwrap_or_default(),
        },
        receipt: m.receipt_handle?,
    })
}

fn invalid_cursor() -> Error {
    Error::invalid("invalid_cursor", "cursor is not one a listing gave")
}

#[async_trait]
impl DeadLetters for SqsDeadLetters {
    async fn list_dead_letters(&self, page: &PageQuery) -> Result<Page<DeadLetter>> {
        let after = match page.after.as_deref() {
            None => None,
            Some(c) => Some(DeadLetter::parse_cursor(c).ok_or_else(invalid_cursor)?),
        };
        let limit = page.limit.clamp(1, MAX_PAGE);
        let scanned = self.scan().await?;
        let receipts = scanned.iter().map(|s| s.receipt.clone()).collect();
        let mut items: Vec<DeadLetter> = scanned
            .into_iter()
            .map(|s| s.letter)
            .filter(|d| after.is_none_or(|(at, id)| (d.at, d.id.as_str()) > (at, id)))
            .take(limit + 1)
            .collect();
        self.release(receipts).await?;
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = more.then(|| items.last().map(DeadLetter::cursor)).flatten();
        Ok(Page { items, next_cursor })
    }

    async fn redrive(&self, ids: Option<&[String]>) -> Result<Vec<String>> {
        let scanned = self.scan().await?;
        let mut moved = Vec::new();
        let mut keep = Vec::new();
        for s in scanned {
            if ids.is_some_and(|ids| !ids.contains(&s.letter.id)) {
                keep.push(s.receipt);
                continue;
            }
            // Sent before the delete: a failure between the two leaves a copy in both
            // queues (at-least-once) rather than losing it. Without attributes: it is a
            // new arrival, as its producer sent it.
            self.client
                .send_message()
                .queue_url(&self.events_url)
                .message_body(&s.letter.body)
                .send()
                .await
                .map_err(|e| sdk_error("redrive to the events queue", e))?;
            self.client
                .delete_message()
                .queue_url(&self.dead_letter_url)
                .receipt_handle(&s.receipt)
                .send()
                .await
                .map_err(|e| sdk_error("delete a redriven dead letter", e))?;
            moved.push(s.letter.id);
        }
        self.release(keep).await?;
        Ok(moved)
    }
}
