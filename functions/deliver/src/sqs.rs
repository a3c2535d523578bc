//! The deliver Lambda function's handler: one SQS batch in, the messages that SQS must
//! redeliver out (`batchItemFailures`, with `ReportBatchItemFailures` on the event source).
//! Messages are handled concurrently; a malformed one is moved to the dead-letter queue
//! with its reason and never holds up the batch. One that must wait a moment comes back
//! when the wait is over rather than after the queue's visibility timeout (its visibility
//! is set to the wait, or near the redrive policy's receive count a delayed copy takes its
//! place); and while one waits on a receiver that hangs, those handled already are deleted
//! from the queue instead of waiting for it. Batches of the ordered (FIFO) queue are
//! handled in order per message group instead (see [`handle_ordered_batch`]).

use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::stream::{FuturesUnordered, StreamExt};
use hookline_core::aws::sqs::{Attribute, Attributed, REASON_ATTRIBUTE};
use hookline_core::aws::SqsQueue;
use hookline_core::ids::MessageId;
use hookline_core::ports::{Clock, Outgoing, PullQueue, SystemClock};
use hookline_core::task::{Origin, Task};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::{Deliverer, Disposition};

/// The message attribute counting how many times a message was put off by a delayed copy
/// (see [`MAX_SHORT_WAITS`]).
pub const WAITS_ATTRIBUTE: &str = "hookline-waits";

/// Delayed copies a message is put off by before it is left to the queue's visibility
/// timeout instead. A short wait counts a receive towards the redrive policy like any
/// other, so a message that would run out of receives is put off by a copy instead, whose
/// count starts again: a message waiting on another copy's lease is not dead-lettered for
/// its waits. Past this many copies, a message that keeps waiting (a store that stays
/// down, a predecessor whose worker died) comes back after the visibility timeout and is
/// dead-lettered after the redrive policy's receives, as any failing message is.
pub const MAX_SHORT_WAITS: u32 = 8;

/// How long the records a batch has handled wait for the rest before they are deleted
/// from the queue by the function itself. On the happy path a batch's deliveries end
/// within this of each other, and the event source deletes them all when the invocation
/// returns, for no call of the function's own; past it, one still running is held by a
/// slow or hanging receiver (up to the request timeout), and those done are deleted
/// without waiting for it, so that a timed-out or failed invocation cannot hand them
/// over again.
pub const EARLY_ACK_AFTER: Duration = Duration::from_secs(2);

/// Longest reason attached to a dead letter; its log line has the whole of it.
const MAX_REASON: usize = 1024;

/// What became of a record.
enum Handled {
    /// Done with: the event source (or an early ack) deletes it.
    Done,
    /// SQS must hand it over again, when its visibility ends.
    Redeliver,
}

/// Handles a batch. `events` is the queue the batch came from: where the visibility of a
/// record that must wait is changed or its delayed copy goes, and from which handled
/// records may be deleted early. `dead_letters` is where messages that can never be
/// handled go.
pub async fn handle_batch(
    deliverer: &Deliverer,
    events: &SqsQueue,
    dead_letters: &SqsQueue,
    event: SqsEvent,
) -> SqsBatchResponse {
    let mut running: FuturesUnordered<_> = event
        .records
        .into_iter()
        .map(|record| async move {
            let id = record.message_id.clone().unwrap_or_default();
            let receipt = record.receipt_handle.clone();
            let handled = handle_record(deliverer, events, dead_letters, record).await;
            (id, receipt, handled)
        })
        .collect();
    let mut redeliver = Vec::new();
    // Receipts of the records done with and not deleted yet, and when they are to be.
    let mut done: Vec<String> = Vec::new();
    let mut ack_at: Option<Instant> = None;
    loop {
        let next = match ack_at {
            Some(at) => tokio::select! {
                next = running.next() => next,
                () = tokio::time::sleep_until(at) => {
                    ack_at = None;
                    ack_early(events, std::mem::take(&mut done)).await;
                    continue;
                }
            },
            None => running.next().await,
        };
        let Some((id, receipt, handled)) = next else {
            break;
        };
        match handled {
            Handled::Done => {
                if let Some(receipt) = receipt {
                    done.push(receipt);
                    ack_at.get_or_insert_with(|| Instant::now() + EARLY_ACK_AFTER);
                }
            }
            Handled::Redeliver => redeliver.push(id),
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = redeliver
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

/// Deletes records handled while others of their batch still run.
async fn ack_early(events: &SqsQueue, receipts: Vec<String>) {
    tracing::debug!(
        count = receipts.len(),
        "deleting handled records while others of the batch run"
    );
    if let Err(e) = events.ack(&receipts).await {
        // Not reported as failures, so the event source deletes them at the end.
        tracing::warn!(error = %e, "early delete failed; left to the event source");
    }
}

async fn handle_record(
    deliverer: &Deliverer,
    events: &SqsQueue,
    dead_letters: &SqsQueue,
    record: SqsMessage,
) -> Handled {
    let id = record.message_id.clone().unwrap_or_default();
    let body = record.body.clone().unwrap_or_default();
    let origin = origin_of(&record);
    match deliverer.handle(&body, origin).await {
        Disposition::Done => Handled::Done,
        Disposition::Retry(wait) => put_off(events, &record, &body, origin, wait).await,
        Disposition::DeadLetter(reason) => park(dead_letters, &id, body, &reason).await,
    }
}

/// Moves a message that can never be handled to the dead-letter queue with its reason.
async fn park(dead_letters: &SqsQueue, id: &str, body: String, reason: &str) -> Handled {
    tracing::warn!(sqs_message = %id, %reason, "moving message to the dead-letter queue");
    let parked = dead_letters
        .send_with_attributes(vec![Attributed {
            message: Outgoing {
                body,
                delay: Duration::ZERO,
            },
            attributes: vec![Attribute::string(REASON_ATTRIBUTE, &short(reason))],
        }])
        .await;
    match parked {
        Ok(()) => Handled::Done,
        Err(e) => {
            // SQS's own redrive policy moves it after enough receives.
            tracing::error!(sqs_message = %id, error = %e, "dead-letter send failed");
            Handled::Redeliver
        }
    }
}

/// Whether the batch comes from the ordered (FIFO) queue: its records carry a message
/// group, and the queue's name ends with `.fifo`.
pub fn is_ordered(event: &SqsEvent) -> bool {
    event.records.iter().any(|r| {
        r.attributes.contains_key(MESSAGE_GROUP_ID)
            || r.event_source_arn
                .as_deref()
                .is_some_and(|arn| arn.ends_with(".fifo"))
    })
}

/// The system attribute naming a FIFO record's message group.
const MESSAGE_GROUP_ID: &str = "MessageGroupId";

/// Handles a batch of the ordered (FIFO) queue `ordered`. Each message group (a sequence)
/// is handled one record at a time, in the order SQS gave them; groups run side by side.
/// Once a record of a group must wait or fails, it and every later record of its group
/// are handed back (SQS FIFO requires it, or a later one would be deleted ahead of it).
/// FIFO queues have no per-message delay, so a wait is the head's visibility; the later
/// records are made visible at once, and SQS holds them back while the head is in flight.
pub async fn handle_ordered_batch(
    deliverer: &Deliverer,
    ordered: &SqsQueue,
    dead_letters: &SqsQueue,
    event: SqsEvent,
) -> SqsBatchResponse {
    let mut groups: Vec<(String, Vec<SqsMessage>)> = Vec::new();
    for record in event.records {
        let group = record
            .attributes
            .get(MESSAGE_GROUP_ID)
            .cloned()
            .unwrap_or_default();
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, records)) => records.push(record),
            None => groups.push((group, vec![record])),
        }
    }
    let redeliver = futures::future::join_all(
        groups
            .into_iter()
            .map(|(_, records)| handle_group(deliverer, ordered, dead_letters, records)),
    )
    .await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = redeliver
        .into_iter()
        .flatten()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

/// The records of one message group, in order; the ids of those handed back.
async fn handle_group(
    deliverer: &Deliverer,
    ordered: &SqsQueue,
    dead_letters: &SqsQueue,
    records: Vec<SqsMessage>,
) -> Vec<String> {
    let mut records = records.into_iter();
    while let Some(record) = records.next() {
        let id = record.message_id.clone().unwrap_or_default();
        let body = record.body.clone().unwrap_or_default();
        let (handled, wait) = match deliverer.handle(&body, origin_of(&record)).await {
            Disposition::Done => (Handled::Done, Duration::ZERO),
            Disposition::Retry(wait) => (Handled::Redeliver, wait),
            Disposition::DeadLetter(reason) => {
                (park(dead_letters, &id, body, &reason).await, Duration::ZERO)
            }
        };
        if let Handled::Done = handled {
            continue;
        }
        release(ordered, &record, wait).await;
        let mut held = vec![id];
        for later in records {
            release(ordered, &later, Duration::ZERO).await;
            held.extend(later.message_id);
        }
        return held;
    }
    Vec::new()
}

/// Sets a record's visibility to `wait`; when that fails it comes back after the queue's
/// visibility timeout instead, later but in order.
async fn release(ordered: &SqsQueue, record: &SqsMessage, wait: Duration) {
    let Some(receipt) = record.receipt_handle.as_deref() else {
        return;
    };
    if let Err(e) = ordered.release(receipt, wait).await {
        let id = record.message_id.as_deref().unwrap_or_default();
        tracing::warn!(sqs_message = %id, error = %e, "visibility not changed; left to the visibility timeout");
    }
}

/// Puts a record that must wait off until the wait is over. While the queue's redrive
/// policy leaves it receives to spare, the record's visibility is set to the wait and it is
/// handed back: the same message comes back when due, however many invocations held it.
/// On its last receives a copy goes on the queue with that delay instead, and the record
/// is done with. The copy of a producer's envelope is the event task it reads as, which
/// carries the message id the envelope was given (see [`origin_of`]): a copy is a new SQS
/// message, with an id of its own. Past [`MAX_SHORT_WAITS`] copies, or when neither can be
/// done, the record is handed back to wait out the visibility timeout.
async fn put_off(
    events: &SqsQueue,
    record: &SqsMessage,
    body: &str,
    origin: Origin,
    wait: Duration,
) -> Handled {
    let id = record.message_id.as_deref().unwrap_or_default();
    let received = record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1);
    let spare = match events.max_receives().await {
        // The next receive is not the last: a wait after it still finds room for a copy.
        Ok(max) => max.is_none_or(|max| received.saturating_add(1) < max),
        Err(e) => {
            tracing::warn!(error = %e, "redrive policy unknown; putting off by a copy");
            false
        }
    };
    if let (true, Some(receipt)) = (spare, record.receipt_handle.as_deref()) {
        match events.release(receipt, wait).await {
            Ok(()) => {
                tracing::debug!(sqs_message = %id, ?wait, "put off by its visibility");
                return Handled::Redeliver;
            }
            Err(e) => {
                tracing::warn!(sqs_message = %id, error = %e, "visibility not changed; putting off by a copy");
            }
        }
    }
    let waits = waits_of(record);
    if waits >= MAX_SHORT_WAITS {
        tracing::warn!(sqs_message = %id, waits, "put off too often; left to the visibility timeout");
        return Handled::Redeliver;
    }
    // Only a task that parses is ever put off.
    let Ok(task) = Task::parse(body, origin) else {
        return Handled::Redeliver;
    };
    let copy = Attributed {
        message: Outgoing {
            body: task.to_body(),
            delay: wait,
        },
        attributes: vec![Attribute::number(WAITS_ATTRIBUTE, u64::from(waits) + 1)],
    };
    match events.send_with_attributes(vec![copy]).await {
        Ok(()) => {
            tracing::debug!(sqs_message = %id, ?wait, "put off by a delayed copy");
            Handled::Done
        }
        Err(e) => {
            tracing::error!(sqs_message = %id, error = %e, "delayed copy not sent; left to the visibility timeout");
            Handled::Redeliver
        }
    }
}

/// How many times the record's message was put off already.
fn waits_of(record: &SqsMessage) -> u32 {
    record
        .message_attributes
        .get(WAITS_ATTRIBUTE)
        .and_then(|a| a.string_value.as_deref())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The reason, cut to [`MAX_REASON`] bytes on a character boundary; SQS refuses an empty
/// attribute value.
fn short(reason: &str) -> String {
    if reason.is_empty() {
        return "unspecified".to_owned();
    }
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// A message id for a producer's envelope, the same on every redelivery of the record:
/// the time SQS got it, and bits of a hash of SQS's message id.
pub fn origin_of(record: &SqsMessage) -> Origin {
    let sent_at = record
        .attributes
        .get("SentTimestamp")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or_else(|| SystemClock.now());
    let digest = Sha256::digest(record.message_id.as_deref().unwrap_or_default().as_bytes());
    let mut random = [0u8; 16];
    random.copy_from_slice(&digest[..16]);
    let ulid = ulid::Ulid::from_parts(sent_at.max(0) as u64, u128::from_be_bytes(random));
    Origin {
        message_id: MessageId::from_ulid(ulid),
        received_at: sent_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sqs::SqsMessageAttribute;

    #[test]
    fn reasons_are_cut_on_a_character_boundary_and_never_empty() {
        assert_eq!(short(""), "unspecified");
        assert_eq!(short("bad json"), "bad json");
        let long = "é".repeat(MAX_REASON);
        let cut = short(&long);
        assert!(cut.len() <= MAX_REASON && cut.len() > MAX_REASON - 2);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_wait_count_is_read_from_the_records_attribute() {
        let mut record = SqsMessage::default();
        assert_eq!(waits_of(&record), 0);
        let mut attribute = SqsMessageAttribute::default();
        attribute.string_value = Some("3".into());
        attribute.data_type = Some("Number".into());
        record
            .message_attributes
            .insert(WAITS_ATTRIBUTE.into(), attribute.clone());
        assert_eq!(waits_of(&record), 3);
        attribute.string_value = Some("many".into());
        record
            .message_attributes
            .insert(WAITS_ATTRIBUTE.into(), attribute);
        assert_eq!(waits_of(&record), 0);
    }
}
