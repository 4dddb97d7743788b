//! Coalesces concurrent auto-assign triggers into few locked transactions.
//!
//! Every trigger of a campaign must pass through the campaign's auto-assign lock, so one transaction per
//! trigger caps a hot campaign at one lock hold (several round trips and a commit) per trigger, and many
//! quiet campaigns at one transaction each per trigger. Here, triggers wait in their campaign's backlog while
//! the replica's batches are running; the next batch takes the pending triggers of several campaigns (each
//! campaign in at most one running batch) and decides them in one transaction, taking the campaigns' locks in
//! a fixed order. Each caller still gets its own answer, and since each campaign's part is decided as if its
//! triggers had come one by one, fairness stays exact. At most `concurrency` batches run at once.
//!
//! A campaign's backlog of triggers is bounded (past the bound a trigger is refused with
//! AUTO_ASSIGN_QUEUE_FULL, the reason's name kept from before it was called a backlog), and triggers whose
//! callers gave up waiting (deadline, cancel) are dropped before their batch runs: nobody would hear the
//! answer, and a redelivery will be decided afresh. (The backlog holds triggers; the waiting queue,
//! `waiting` in every layer, holds conversations nobody could take.)

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use tracing::Instrument;

use super::{AutoAssigned, CampaignBatch, run_batch};
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
/// asked for (a batch part without triggers).
#[derive(Default)]
struct CampaignBacklog {
    pending: VecDeque<Pending>,
    drain: bool,
    /// A running batch holds this campaign: its next part waits for that batch to end.
    running: bool,
    /// The campaign is in `State::ready`.
    ready: bool,
}

impl CampaignBacklog {
    fn has_work(&self) -> bool {
        !self.pending.is_empty() || self.drain
    }
}

/// A campaign has an entry while it has work or a running batch.
#[derive(Default)]
struct State {
    campaigns: HashMap<String, CampaignBacklog>,
    /// Campaigns with work and no running batch, oldest first.
    ready: VecDeque<String>,
    /// Batch runners alive.
    runners: usize,
}

impl State {
    /// Puts the campaign in line for the next batch if it has work and no running batch; forgets it if it
    /// has neither.
    fn settle(&mut self, campaign_id: &str) {
        let Some(backlog) = self.campaigns.get_mut(campaign_id) else {
            return;
        };
        if backlog.running || backlog.ready {
            return;
        }
        if backlog.has_work() {
            backlog.ready = true;
            self.ready.push_back(campaign_id.to_owned());
        } else {
            self.campaigns.remove(campaign_id);
        }
    }
}

/// One campaign's part of a batch being run: its triggers' replies and spans.
struct Part {
    campaign_id: String,
    triggers: Vec<Trigger>,
    replies: Vec<Reply>,
    spans: Vec<tracing::Span>,
}

/// How triggers are batched.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most triggers in a batch; 1 turns coalescing off: one transaction per trigger.
    pub max_batch: usize,
    /// Most triggers of a campaign waiting for its next batch.
    pub max_backlog: usize,
    /// Most batches running at once.
    pub concurrency: usize,
    /// A batch holds one campaign's triggers only (`--single-campaign-transactions`).
    pub single_campaign: bool,
}

/// Cheap to clone; clones share the backlogs.
#[derive(Clone)]
pub struct Coalescer {
    store: Store,
    /// Told after each batch: its history, numbered by the batch, is fanned out.
    feed: Feed,
    batching: Batching,
    state: Arc<Mutex<State>>,
}

impl Coalescer {
    pub fn new(store: Store, feed: Feed, batching: Batching) -> Self {
        Self {
            store,
            feed,
            batching: Batching {
                max_batch: batching.max_batch.max(1),
                max_backlog: batching.max_backlog.max(1),
                concurrency: batching.concurrency.max(1),
                single_campaign: batching.single_campaign,
            },
            state: Arc::default(),
        }
    }

    /// Runs one trigger, batched with whatever else is waiting.
    pub async fn submit(&self, campaign_id: &str, trigger: Trigger) -> AppResult<AutoAssigned> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            trigger,
            reply,
            span: tracing::Span::current(),
        };
        {
            let mut state = self.state.lock().expect("coalescer state");
            let backlog = state.campaigns.entry(campaign_id.to_owned()).or_default();
            if backlog.pending.len() >= self.batching.max_backlog {
                // Callers that gave up free their places first.
                backlog.pending.retain(|p| !p.reply.is_closed());
            }
            if backlog.pending.len() >= self.batching.max_backlog {
                return Err(backlog_full(self.batching.max_backlog));
            }
            backlog.pending.push_back(pending);
            state.settle(campaign_id);
            self.start_runner(&mut state);
        }
        answer.await.unwrap_or_else(|_| Err(batch_failed()))
    }

    /// Asks for the campaign's waiting conversations to be drained by its next batch (a part of its own if
    /// no trigger is waiting). Returns at once.
    pub fn drain_waiting(&self, campaign_id: &str) {
        let mut state = self.state.lock().expect("coalescer state");
        state
            .campaigns
            .entry(campaign_id.to_owned())
            .or_default()
            .drain = true;
        state.settle(campaign_id);
        self.start_runner(&mut state);
    }

    /// After a change that may have freed an organizer (`domain::effects::may_free_organizer`): drains the
    /// campaign's waiting conversations if it may have any. Returns at once.
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

    /// Starts a batch runner if work is ready and fewer than `concurrency` run.
    fn start_runner(&self, state: &mut State) {
        if !state.ready.is_empty() && state.runners < self.batching.concurrency {
            state.runners += 1;
            // A task of its own: a caller that goes away must not cancel a batch other callers wait on.
            tokio::spawn(self.clone().run());
        }
    }

    /// Takes the next batch: the ready campaigns' waiting triggers, oldest campaign first, up to
    /// `max_batch` triggers (a drain-only part counts as none), one campaign's only under
    /// `single_campaign`. Marks its campaigns running.
    fn take_batch(&self, state: &mut State) -> Vec<Part> {
        let (mut parts, mut size, mut abandoned) = (Vec::new(), 0, 0);
        while size < self.batching.max_batch
            && (parts.is_empty() || !self.batching.single_campaign)
            && let Some(campaign_id) = state.ready.pop_front()
        {
            let Some(backlog) = state.campaigns.get_mut(&campaign_id) else {
                continue;
            };
            backlog.ready = false;
            let mut part = Part {
                campaign_id: campaign_id.clone(),
                triggers: Vec::new(),
                replies: Vec::new(),
                spans: Vec::new(),
            };
            while size < self.batching.max_batch
                && let Some(pending) = backlog.pending.pop_front()
            {
                if pending.reply.is_closed() {
                    abandoned += 1;
                    continue;
                }
                size += 1;
                part.triggers.push(pending.trigger);
                part.replies.push(pending.reply);
                part.spans.push(pending.span);
            }
            // Every part drains first, so a drain asked for is done by this one.
            let drain = std::mem::take(&mut backlog.drain);
            if part.triggers.is_empty() && !drain {
                state.settle(&campaign_id);
                continue;
            }
            backlog.running = true;
            parts.push(part);
        }
        if abandoned > 0 {
            tracing::debug!(abandoned, "dropped triggers whose callers gave up");
        }
        parts
    }

    /// Runs batches until no campaign is ready.
    async fn run(self) {
        let mut guard = RunnerGuard {
            state: &self.state,
            campaigns: Vec::new(),
        };
        loop {
            let mut parts = {
                let mut state = self.state.lock().expect("coalescer state");
                let parts = self.take_batch(&mut state);
                if parts.is_empty() {
                    state.runners -= 1;
                    guard.campaigns.clear();
                    std::mem::forget(guard);
                    return;
                }
                guard.campaigns = parts.iter().map(|p| p.campaign_id.clone()).collect();
                parts
            };
            let span = batch_span(&parts);
            let batch: Vec<CampaignBatch> = parts
                .iter_mut()
                .map(|part| CampaignBatch {
                    campaign_id: part.campaign_id.clone(),
                    triggers: std::mem::take(&mut part.triggers),
                })
                .collect();
            tracing::debug!(campaigns = batch.len(), "auto-assign batch");
            let outcome = run_batch(&self.store, &batch).instrument(span).await;
            let drain_again: Vec<bool> = match &outcome {
                Ok(outcomes) => outcomes.iter().map(|o| o.drain_again).collect(),
                Err(_) => vec![false; parts.len()],
            };
            {
                let mut state = self.state.lock().expect("coalescer state");
                for (part, again) in parts.iter().zip(&drain_again) {
                    if let Some(backlog) = state.campaigns.get_mut(&part.campaign_id) {
                        backlog.running = false;
                        // A long waiting queue drains batch after batch, not one batch per event or sweep.
                        backlog.drain |= *again;
                    }
                    state.settle(&part.campaign_id);
                }
                guard.campaigns.clear();
            }
            match outcome {
                Ok(outcomes) => {
                    for (part, outcome) in parts.into_iter().zip(outcomes) {
                        // The batch numbered its campaign's events itself.
                        self.feed.fan_out(&part.campaign_id);
                        for (reply, result) in part.replies.into_iter().zip(outcome.replies) {
                            let _ = reply.send(result);
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "auto-assign batch failed");
                    let mut err = Some(err);
                    for reply in parts.into_iter().flat_map(|part| part.replies) {
                        // The first caller gets the error itself; the others learn their batch failed.
                        let _ = reply.send(Err(err.take().unwrap_or_else(batch_failed)));
                    }
                }
            }
        }
    }
}

/// If a runner dies mid-batch, forget its campaigns' backlogs so their next triggers start afresh (dropping
/// the pending replies tells their callers the batch failed), and count the runner gone.
struct RunnerGuard<'a> {
    state: &'a Mutex<State>,
    campaigns: Vec<String>,
}

impl Drop for RunnerGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.state.lock() {
            for campaign_id in &self.campaigns {
                state.campaigns.remove(campaign_id);
            }
            state.ready.retain(|c| !self.campaigns.contains(c));
            state.runners = state.runners.saturating_sub(1);
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

fn backlog_full(max_backlog: usize) -> AppError {
    AppError::new(
        Reason::AutoAssignQueueFull,
        format!(
            "{max_backlog} auto-assign triggers of this campaign are already waiting; retry with backoff"
        ),
    )
}

/// The span of one auto-assign batch: under the first trigger's call (a drain has none), following from
/// the other calls it serves.
fn batch_span(parts: &[Part]) -> tracing::Span {
    let mut spans = parts.iter().flat_map(|part| &part.spans);
    let parent = spans.next().and_then(|span| span.id());
    let campaigns: Vec<&str> = parts.iter().map(|p| p.campaign_id.as_str()).collect();
    let span = tracing::info_span!(
        parent: parent,
        "auto_assign.batch",
        campaign = campaigns.join(",").as_str(),
        size = parts.iter().map(|p| p.triggers.len()).sum::<usize>()
    );
    for pending in spans {
        span.follows_from(pending);
    }
    span
}
