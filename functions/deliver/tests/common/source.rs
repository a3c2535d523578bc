//! The event source's side of an invocation on moto, for the suites that play it: what it
//! deletes once the deliver function has answered.

use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;

/// Deletes the records an invocation handled, as the event source does with
/// `ReportBatchItemFailures`: all but those whose message ids are in `failed`. SQS's
/// answer is returned (a receipt gone stale is the next receiver's to settle).
pub async fn delete_handled(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    records: &[SqsMessage],
    failed: impl Fn(&str) -> bool,
) -> Result<(), aws_sdk_sqs::Error> {
    let entries: Vec<_> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| !failed(r.message_id.as_deref().unwrap_or_default()))
        .map(|(i, r)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(r.receipt_handle.clone().unwrap_or_default())
                .build()
                .expect("an entry with an id and a receipt")
        })
        .collect();
    if !entries.is_empty() {
        sqs.delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await?;
    }
    Ok(())
}
