//! The deliver Lambda function's handler: one SQS batch in, the messages that SQS must
//! redeliver out (`batchItemFailures`, with `ReportBatchItemFailures` on the event source).
//! Messages are handled concurrently; a malformed one is moved to the dead-letter queue
//! with its reason logged and never holds up the batch.

use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::future::join_all;
use hookline_core::ids::MessageId;
use hookline_core::ports::{Clock, Outgoing, Queue, SystemClock};
use hookline_core::task::Origin;
use sha2::{Digest, Sha256};

use crate::{Deliverer, Disposition};

/// Handles a batch. `dead_letters` is the dead-letter queue, where messages that can
/// never be handled go.
pub async fn handle_batch(
    deliverer: &Deliverer,
    dead_letters: &dyn Queue,
    event: SqsEvent,
) -> SqsBatchResponse {
    let results = join_all(
        event
            .records
            .into_iter()
            .map(|record| handle_record(deliverer, dead_letters, record)),
    )
    .await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = results
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

/// Returns the record's id if SQS must deliver it again.
async fn handle_record(
    deliverer: &Deliverer,
    dead_letters: &dyn Queue,
    record: SqsMessage,
) -> Option<String> {
    let id = record.message_id.clone().unwrap_or_default();
    let body = record.body.clone().unwrap_or_default();
    match deliverer.handle(&body, origin_of(&record)).await {
        Disposition::Done => None,
        // Left to the queue's visibility timeout, which is longer than a lease.
        Disposition::Retry(_) => Some(id),
        Disposition::DeadLetter(reason) => {
            tracing::warn!(sqs_message = %id, %reason, "moving message to the dead-letter queue");
            let parked = dead_letters
                .send(vec![Outgoing {
                    body,
                    delay: Duration::ZERO,
                }])
                .await;
            match parked {
                Ok(()) => None,
                Err(e) => {
                    // SQS's own redrive policy moves it after enough receives.
                    tracing::error!(sqs_message = %id, error = %e, "dead-letter send failed");
                    Some(id)
                }
            }
        }
    }
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
