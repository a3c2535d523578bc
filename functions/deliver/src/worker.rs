//! The pull loop of local mode: takes messages from a [`PullQueue`], handles each in its
//! own task (so a slow endpoint holds up nothing else), and acks, releases or dead-letters
//! them as the handler says. On AWS the SQS event source plays this part.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use hookline_core::ids::MessageId;
use hookline_core::ports::{Clock, PullQueue, Received, SystemClock};
use hookline_core::task::Origin;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::{Deliverer, Disposition};

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Messages handled at once.
    pub concurrency: usize,
    /// How long a received message stays hidden; longer than a delivery lease.
    pub visibility: Duration,
    /// Longest sleep when the queue looks empty.
    pub idle_poll: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 256,
            visibility: Duration::from_secs(60),
            idle_poll: Duration::from_millis(500),
        }
    }
}

/// Runs until `shutdown` turns true, then waits for the messages in hand.
pub async fn run(
    deliverer: Arc<Deliverer>,
    queue: Arc<dyn PullQueue>,
    opts: WorkerOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(opts.concurrency));
    let mut running = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        while running.try_join_next().is_some() {}
        let free = permits.available_permits();
        if free == 0 {
            tokio::select! {
                _ = running.join_next() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let batch = match queue.receive(free.min(100), opts.visibility).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "queue receive failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                _ = queue.wait_ready(opts.idle_poll) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        for received in batch {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let deliverer = deliverer.clone();
            let queue = queue.clone();
            running.spawn(async move {
                handle_one(&deliverer, queue.as_ref(), received).await;
                drop(permit);
            });
        }
    }
    while running.join_next().await.is_some() {}
}

async fn handle_one(deliverer: &Deliverer, queue: &dyn PullQueue, received: Received) {
    let origin = origin_of(&received);
    let outcome = match deliverer.handle(&received.body, origin).await {
        Disposition::Done => queue.ack(std::slice::from_ref(&received.receipt)).await,
        Disposition::Retry(after) => queue.release(&received.receipt, after).await,
        Disposition::DeadLetter(reason) => queue.dead_letter(&received.receipt, &reason).await,
    };
    if let Err(e) = outcome {
        // The message reappears when its visibility ends; nothing is lost.
        tracing::error!(error = %e, "queue update failed");
    }
}

/// A message id for a producer envelope that is stable across redeliveries: derived from
/// the queue's own id of the message (the receipt up to its receive count).
fn origin_of(received: &Received) -> Origin {
    let queue_id = received.receipt.split(':').next().unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    queue_id.hash(&mut h);
    Origin {
        message_id: MessageId::from_ulid(ulid_from(h.finish())),
        received_at: SystemClock.now(),
    }
}

fn ulid_from(hash: u64) -> ulid::Ulid {
    ulid::Ulid::from_parts(0, hash as u128)
}
