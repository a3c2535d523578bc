//! The deliver Lambda function: SQS batches in, signed deliveries out (at most
//! `HOOKLINE_CONCURRENCY` requests at once), and `batchItemFailures` for what SQS must
//! redeliver.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use hookline_core::cache::CachedStore;
use hookline_core::lambda::{init_metrics, init_tracing, LambdaEnv, ORDERED_QUEUE_URL};
use hookline_core::ports::SystemClock;
use hookline_deliver::{sqs, Deliverer};
use lambda_runtime::{service_fn, LambdaEvent};

/// How long a warm function reuses a tenant's endpoint list.
const ENDPOINT_CACHE: Duration = Duration::from_secs(5);

// One thread: a function instance serves one invocation at a time on at most a vCPU or
// two, and its work is waiting on the network; the multi-thread scheduler would only add
// start-up work and size.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let metrics = init_metrics();
    let env = LambdaEnv::load().await?;
    let store = Arc::new(CachedStore::new(env.store()?).with_endpoints(ENDPOINT_CACHE));
    let events = env.queue("QUEUE_URL")?;
    let dead_letters = env.queue("DLQ_URL")?;
    // The ordered queue is a second event source of the function, when deployed with one.
    let ordered = env.queue(ORDERED_QUEUE_URL).ok();
    let sender = env.sender()?;
    let deliverer = Deliverer::new(
        store,
        events.clone(),
        Arc::new(SystemClock),
        env.config.clone(),
        sender,
    )
    .with_request_limit(env.request_limit());
    let deliverer = &deliverer;
    let (events, dead_letters) = (events.as_ref(), dead_letters.as_ref());
    let ordered = ordered.as_deref();
    let metrics = &metrics;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let answer = match ordered {
            Some(ordered) if sqs::is_ordered(&event.payload) => {
                sqs::handle_ordered_batch(deliverer, ordered, dead_letters, event.payload).await
            }
            _ => sqs::handle_batch(deliverer, events, dead_letters, event.payload).await,
        };
        // One flush per invocation, before the answer ends it.
        if let Some(metrics) = metrics {
            metrics.flush_stdout();
        }
        Ok::<_, lambda_runtime::Error>(answer)
    }))
    .await
}
