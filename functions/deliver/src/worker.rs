//! The pull loop of local mode: takes messages from a [`PullQueue`], handles each in its
//! own task (so a slow endpoint holds up nothing else), and acks, releases or dead-letters
//! them as the handler says. On AWS the SQS event source plays this part.
//!
//! Acks are gathered: the messages done while one ack is being written are acked together
//! by the next, one database job for a burst instead of one each (as the event source
//! deletes a batch at once). A message done but not acked yet when the process stops is
//! received again later and finds its deliveries recorded, so nothing is sent twice.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use hookline_core::ids::MessageId;
use hookline_core::ports::{Clock, PullQueue, Received, SystemClock};
use hookline_core::task::Origin;
use tokio::sync::{mpsc, watch, Semaphore};
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
    let (done, finished) = mpsc::unbounded_channel();
    let acker = {
        let queue = queue.clone();
        tokio::spawn(ack_gathered(finished, move |receipts| {
            let queue = queue.clone();
            async move { queue.ack(&receipts).await }
        }))
    };
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
            let done = done.clone();
            running.spawn(async move {
                handle_one(&deliverer, queue.as_ref(), &done, received).await;
                drop(permit);
            });
        }
    }
    while running.join_next().await.is_some() {}
    // The last acks are written before the worker is done.
    drop(done);
    if let Err(e) = acker.await {
        tracing::error!(error = %e, "the ack task failed");
    }
}

/// Most receipts one ack carries.
const MAX_ACKS: usize = 256;

/// Acks the receipts sent on `finished`: each ack takes every receipt that came in while
/// the one before was written (up to [`MAX_ACKS`]). Ends when every sender is gone and
/// everything sent is acked.
async fn ack_gathered<F, Fut>(mut finished: mpsc::UnboundedReceiver<String>, ack: F)
where
    F: Fn(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = hookline_core::Result<()>>,
{
    let mut receipts = Vec::with_capacity(MAX_ACKS);
    while finished.recv_many(&mut receipts, MAX_ACKS).await > 0 {
        if let Err(e) = ack(std::mem::take(&mut receipts)).await {
            // The messages reappear when their visibility ends; nothing is lost.
            tracing::error!(error = %e, "queue ack failed");
        }
    }
}

async fn handle_one(
    deliverer: &Deliverer,
    queue: &dyn PullQueue,
    done: &mpsc::UnboundedSender<String>,
    received: Received,
) {
    let origin = origin_of(&received);
    let outcome = match deliverer.handle(&received.body, origin).await {
        Disposition::Done => match done.send(received.receipt) {
            Ok(()) => Ok(()),
            Err(unsent) => queue.ack(std::slice::from_ref(&unsent.0)).await,
        },
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::Notify;

    use super::*;

    /// Receipts finished while an ack is written go together in the next one, each once,
    /// and the task ends only when everything sent is acked.
    #[tokio::test]
    async fn receipts_done_during_an_ack_are_acked_together() {
        let calls: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let gate = Arc::new(Notify::new());
        let (done, finished) = mpsc::unbounded_channel();
        let acker = {
            let (calls, gate) = (calls.clone(), gate.clone());
            tokio::spawn(ack_gathered(finished, move |receipts| {
                let (calls, gate) = (calls.clone(), gate.clone());
                async move {
                    let first = calls.lock().unwrap().is_empty();
                    calls.lock().unwrap().push(receipts);
                    if first {
                        // The first ack is slow: everything else finishes meanwhile.
                        gate.notified().await;
                    }
                    Ok(())
                }
            }))
        };
        done.send("r0".to_string()).unwrap();
        while calls.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        for i in 1..=300 {
            done.send(format!("r{i}")).unwrap();
        }
        gate.notify_one();
        drop(done);
        acker.await.unwrap();

        let calls = calls.lock().unwrap();
        let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, MAX_ACKS, 300 - MAX_ACKS]);
        let mut acked: Vec<&String> = calls.iter().flatten().collect();
        acked.sort();
        acked.dedup();
        assert_eq!(acked.len(), 301, "each receipt acked once");
    }

    /// A failed ack loses nothing for the ones after it.
    #[tokio::test]
    async fn a_failed_ack_does_not_stop_the_later_ones() {
        let calls: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let (done, finished) = mpsc::unbounded_channel();
        done.send("a".to_string()).unwrap();
        let acker = {
            let calls = calls.clone();
            tokio::spawn(ack_gathered(finished, move |receipts| {
                let calls = calls.clone();
                async move {
                    let mut calls = calls.lock().unwrap();
                    calls.push(receipts);
                    if calls.len() == 1 {
                        return Err(hookline_core::Error::backend("ack", "down"));
                    }
                    Ok(())
                }
            }))
        };
        while calls.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        done.send("b".to_string()).unwrap();
        drop(done);
        acker.await.unwrap();
        assert_eq!(*calls.lock().unwrap(), [vec!["a"], vec!["b"]]);
    }
}
