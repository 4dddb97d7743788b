//! Coalesces concurrent auto-assign triggers of one campaign into one locked transaction.
//!
//! Every trigger of a campaign must pass through the campaign's auto-assign lock, so one transaction per trigger
//! caps a hot campaign at one lock hold (several round trips and a commit) per trigger. Here, triggers that
//! arrive while a campaign's batch is running queue up, and the next batch takes them all under a single
//! lock hold. Each caller still gets its own answer, and since a batch is decided as if its triggers had
//! come one by one, fairness stays exact. Different campaigns run concurrently and never wait on each other.
//!
//! A campaign's queue is bounded (past the bound a trigger is refused with AUTO_ASSIGN_QUEUE_FULL), and
//! triggers whose callers gave up waiting (deadline, cancel) are dropped before their batch runs: nobody
//! would hear the answer, and a redelivery will be decided afresh.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use tracing::Instrument;

use super::{AutoAssigned, run_batch};
use crate::domain::auto_assign::Trigger;
use crate::error::{AppError, AppResult, Reason};
use crate::observability::DRAINS;
use crate::service::feed::Feed;
use crate::store::Store;
use crate::store::waiting;

type Reply = oneshot::Sender<AppResult<AutoAssigned>>;

struct Pending {
    trigger: Trigger,
    reply: Reply,
    /// The call's span: the batch's span is a child of the first, and follows from the others.
    span: tracing::Span,
}

/// A campaign's triggers waiting for its next batch, and whether a drain of its waiting conversations was
/// asked for (a batch without triggers).
#[derive(Default)]
struct CampaignQueue {
    pending: VecDeque<Pending>,
    drain: bool,
}

type Queues = Mutex<HashMap<String, CampaignQueue>>;

/// Cheap to clone; clones share the queues.
#[derive(Clone)]
pub struct Coalescer {
    store: Store,
    /// Told after each batch: its history is numbered and fanned out.
    feed: Feed,
    max_batch: usize,
    max_queue: usize,
    /// A campaign has an entry exactly while a worker is draining its queue.
    queues: Arc<Queues>,
}

impl Coalescer {
    /// `max_batch` 1 turns coalescing off: one transaction per trigger. At most `max_queue` triggers of a
    /// campaign wait for its next batch.
    pub fn new(store: Store, feed: Feed, max_batch: usize, max_queue: usize) -> Self {
        Self {
            store,
            feed,
            max_batch: max_batch.max(1),
            max_queue: max_queue.max(1),
            queues: Arc::default(),
        }
    }

    /// Runs one trigger, batched with whatever else of its campaign is waiting.
    pub async fn submit(&self, campaign_id: &str, trigger: Trigger) -> AppResult<AutoAssigned> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            trigger,
            reply,
            span: tracing::Span::current(),
        };
        let start_worker = {
            let mut queues = self.queues.lock().expect("queue lock");
            match queues.get_mut(campaign_id) {
                Some(queue) => {
                    if queue.pending.len() >= self.max_queue {
                        // Callers that gave up free their places first.
                        queue.pending.retain(|p| !p.reply.is_closed());
                    }
                    if queue.pending.len() >= self.max_queue {
                        return Err(queue_full(self.max_queue));
                    }
                    queue.pending.push_back(pending);
                    false
                }
                None => {
                    let queue = CampaignQueue {
                        pending: VecDeque::from([pending]),
                        drain: false,
                    };
                    queues.insert(campaign_id.to_owned(), queue);
                    true
                }
            }
        };
        if start_worker {
            // A task of its own: a caller that goes away must not cancel a batch other callers wait on.
            tokio::spawn(self.clone().drain(campaign_id.to_owned()));
        }
        answer.await.unwrap_or_else(|_| Err(batch_failed()))
    }

    /// Asks for the campaign's waiting conversations to be drained by its next batch (a batch of its own if
    /// no trigger is waiting). Returns at once.
    pub fn drain_waiting(&self, campaign_id: &str) {
        let start_worker = {
            let mut queues = self.queues.lock().expect("queue lock");
            match queues.get_mut(campaign_id) {
                Some(queue) => {
                    queue.drain = true;
                    false
                }
                None => {
                    let queue = CampaignQueue {
                        pending: VecDeque::new(),
                        drain: true,
                    };
                    queues.insert(campaign_id.to_owned(), queue);
                    true
                }
            }
        };
        if start_worker {
            tokio::spawn(self.clone().drain(campaign_id.to_owned()));
        }
    }

    /// After a change that may have freed an organizer (an unassign, a resolve, availability, capacity,
    /// access, settings): drains the campaign's waiting conversations if it may have any. Returns at once.
    pub fn poke(&self, campaign_id: &str) {
        let coalescer = self.clone();
        let campaign_id = campaign_id.to_owned();
        tokio::spawn(async move {
            let may = async {
                let mut conn = coalescer.store.acquire().await?;
                waiting::may_have_waiting(&mut conn, &campaign_id).await
            };
            match may.await {
                Ok(true) => {
                    metrics::counter!(DRAINS, "trigger" => "change").increment(1);
                    coalescer.drain_waiting(&campaign_id);
                }
                Ok(false) => {}
                // The periodic sweep drains what a failed poke left.
                Err(err) => tracing::debug!(campaign_id, error = %err, "poke failed"),
            }
        });
    }

    /// Takes batches off the campaign's queue until it is empty.
    async fn drain(self, campaign_id: String) {
        let mut guard = DrainGuard {
            queues: &self.queues,
            campaign_id: &campaign_id,
            done: false,
        };
        loop {
            let (batch, abandoned) = {
                let mut queues = self.queues.lock().expect("queue lock");
                let queue = queues
                    .get_mut(&campaign_id)
                    .expect("a draining campaign has a queue");
                let (mut batch, mut abandoned) = (Vec::new(), 0);
                while batch.len() < self.max_batch
                    && let Some(pending) = queue.pending.pop_front()
                {
                    if pending.reply.is_closed() {
                        abandoned += 1;
                    } else {
                        batch.push(pending);
                    }
                }
                // Every batch drains first, so a drain asked for is done by this one.
                let drain = std::mem::take(&mut queue.drain);
                if batch.is_empty() && !drain {
                    queues.remove(&campaign_id);
                    guard.done = true;
                    return;
                }
                (batch, abandoned)
            };
            if abandoned > 0 {
                tracing::debug!(
                    campaign_id,
                    abandoned,
                    "dropped triggers whose callers gave up"
                );
            }
            let span = batch_span(&campaign_id, &batch);
            let (triggers, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|p| (p.trigger, p.reply)).unzip();
            tracing::debug!(campaign_id, size = triggers.len(), "auto-assign batch");
            match run_batch(&self.store, &campaign_id, &triggers)
                .instrument(span)
                .await
            {
                Ok((results, drain_again)) => {
                    self.feed.wake(&campaign_id);
                    // A long queue drains batch after batch, not one batch per event or sweep.
                    if drain_again {
                        let mut queues = self.queues.lock().expect("queue lock");
                        if let Some(queue) = queues.get_mut(&campaign_id) {
                            queue.drain = true;
                        }
                    }
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                }
                Err(err) => {
                    tracing::warn!(campaign_id, error = %err, "auto-assign batch failed");
                    let mut err = Some(err);
                    for reply in replies {
                        // The first caller gets the error itself; the others learn their batch failed.
                        let _ = reply.send(Err(err.take().unwrap_or_else(batch_failed)));
                    }
                }
            }
        }
    }
}

/// Retrying is safe: a trigger id that did take effect is answered from its record.
fn batch_failed() -> AppError {
    AppError::new(
        Reason::AutoAssignBatchFailed,
        "the auto-assign batch this call joined failed; retry the call",
    )
}

fn queue_full(max_queue: usize) -> AppError {
    AppError::new(
        Reason::AutoAssignQueueFull,
        format!(
            "{max_queue} auto-assign triggers of this campaign are already waiting; retry with backoff"
        ),
    )
}

/// If a worker dies mid-drain, forget its queue so the next trigger starts a fresh worker; dropping the
/// queued replies tells their callers the batch failed.
struct DrainGuard<'a> {
    queues: &'a Queues,
    campaign_id: &'a str,
    done: bool,
}

impl Drop for DrainGuard<'_> {
    fn drop(&mut self) {
        if !self.done
            && let Ok(mut queues) = self.queues.lock()
        {
            queues.remove(self.campaign_id);
        }
    }
}

/// The span of one auto-assign batch: under the first trigger's call (a drain has none), following from
/// the other calls it serves.
fn batch_span(campaign_id: &str, batch: &[Pending]) -> tracing::Span {
    let parent = batch.first().and_then(|p| p.span.id());
    let span = tracing::info_span!(
        parent: parent,
        "auto_assign.batch",
        campaign = campaign_id,
        size = batch.len()
    );
    for pending in batch.iter().skip(1) {
        span.follows_from(&pending.span);
    }
    span
}
