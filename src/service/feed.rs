//! The feed (WatchAssignmentEvents): each campaign's events in one gapless order, live.
//!
//! Writers only insert events; after its commit the replica that wrote them numbers them ([`Feed::wake`]:
//! [`sequence`]), and the sequencer NOTIFYs the feed channel. Each replica holds one LISTEN connection
//! ([`Feed::listen`]); when this replica has watchers of the campaign, it reads the new events once and fans
//! them out in-process, with what each watching user may see of them (one read per batch, not per watcher).
//! A watcher first catches up from the database, then follows the fan-out, and reads
//! the database again for anything the fan-out did not carry (a gap, a lost notification). A replica that
//! dies between a commit and its sequencer leaves the numbering to the periodic sweep.
//!
//! Watching never takes the pool's connections from calls: the listener has a connection of its own, and
//! watchers take turns at a small budget of reads (`FEED_READ_CONCURRENCY`), one connection at a time.

mod watch;

pub use watch::{WatchRequest, watch};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};

use crate::domain::model::AssignmentEvent;
use crate::domain::opaque::CampaignIds;
use crate::domain::paging::PageScope;
use crate::error::AppResult;
use crate::observability::FEED_LAG_SECONDS;
use crate::store::feed::{self, EventFilter, WatcherAccess};
use crate::store::notices::{self, Notice};
use crate::store::{Conn, Store};

/// Events read from the database at a time.
const READ_LIMIT: i64 = 500;
/// Fan-out batches a replica keeps for a campaign's slowest watcher before cutting it off.
const FANOUT_BATCHES: usize = 64;
/// Events queued for one watcher's stream before it stops taking batches from the fan-out.
const WATCHER_QUEUE: usize = 64;
/// Database reads the replica's watchers make at once, unless configured (`FEED_READ_CONCURRENCY`).
pub const FEED_READS: usize = 2;

/// Numbers the campaign's committed events (see `store::feed::sequence`), in a transaction of its own.
/// A transaction numbers at most `SEQUENCE_LIMIT` events; more are numbered in the next, at once.
pub async fn sequence(store: &Store, campaign_id: &str) -> AppResult<i64> {
    let schema = store.schema().await?;
    loop {
        let mut tx = store.begin_keyed().await?;
        let (head, numbered) = feed::sequence(&mut tx, campaign_id).await?;
        let moved: &[Notice] = if numbered > 0 {
            &[Notice::HeadMoved(campaign_id)]
        } else {
            &[]
        };
        notices::commit_notifying(tx, schema, moved).await?;
        if numbered < feed::SEQUENCE_LIMIT {
            return Ok(head);
        }
    }
}

/// An event as a client gets it: with its public id and its cursor, both opaque (`domain::opaque`).
#[derive(Debug, Clone)]
pub struct Delivered {
    pub event: AssignmentEvent,
    pub place: Place,
}

/// Where an event is in its campaign's feed, as a client sees it: made from its feed number, but telling
/// nothing about how many events (hidden, or of other campaigns) came before or between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// Unique in the campaign.
    pub event_id: i64,
    /// What WatchAssignmentEvents resumes after.
    pub cursor: String,
}

impl Place {
    /// The place of the campaign's event numbered `seq`; `cursors` is the campaign's feed scope.
    pub(crate) fn of(ids: &CampaignIds, cursors: &PageScope, seq: i64) -> Self {
        let event_id = ids.event_id(seq);
        Self {
            event_id,
            cursor: cursors.event_token(event_id),
        }
    }
}

/// Numbered events, fanned out per campaign, with what each of the replica's watching users may see of
/// them: read once per batch for all of them, so watchers cost the database nothing each.
pub(super) struct Fanout {
    events: Vec<AssignmentEvent>,
    /// Each event's place, made once for every watcher.
    places: Vec<Place>,
    /// Every user watching when the batch was read: `None` if they are no longer in the directory.
    access: HashMap<String, Option<WatcherAccess>>,
}

type Batch = Arc<Fanout>;

#[derive(Default)]
struct Campaign {
    sender: Option<broadcast::Sender<Batch>>,
    /// The acting users watching on this replica, with how many streams each.
    watching: HashMap<String, usize>,
    /// The last number fanned out.
    fanned: i64,
    /// A wake-up is running; `again`: another came meanwhile; `sequence`: one of them asks for numbering.
    running: bool,
    again: bool,
    sequence: bool,
}

/// This replica's side of the feed: the listener, the sequencer runs and the fan-out. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    store: Store,
    campaigns: Arc<Mutex<HashMap<String, Campaign>>>,
    fanout_batches: usize,
    watcher_queue: usize,
    /// How far back a cursor may resume.
    retention: Duration,
    /// The watchers' own budget of database reads (starting, catching up): they take turns at it, so
    /// however many watch, they hold at most this many of the pool's connections.
    reads: Arc<Semaphore>,
}

impl Feed {
    /// The feed hub; its watchers make at most `reads` database reads at once.
    pub fn new(store: Store, retention: Duration, reads: usize) -> Self {
        Self {
            retention,
            reads: Arc::new(Semaphore::new(reads.max(1))),
            ..Self::with_buffers(store, FANOUT_BATCHES, WATCHER_QUEUE)
        }
    }

    /// How far a watcher may fall behind: `fanout_batches` of the campaign's fan-out past a full queue of
    /// `watcher_queue` events.
    pub fn with_buffers(store: Store, fanout_batches: usize, watcher_queue: usize) -> Self {
        Self {
            store,
            campaigns: Arc::default(),
            fanout_batches,
            watcher_queue,
            retention: Duration::from_secs(7 * 86_400),
            reads: Arc::new(Semaphore::new(FEED_READS)),
        }
    }

    /// A watcher's turn to read the database; others wait for it (FIFO), never the calls' share of the
    /// pool.
    async fn read_turn(&self) -> OwnedSemaphorePermit {
        self.reads
            .clone()
            .acquire_owned()
            .await
            .expect("the watchers' read budget is never closed")
    }

    /// Numbers and fans out every campaign with unnumbered events (for a replica that died in between).
    pub async fn sweep(&self) {
        let campaigns = match self.store.acquire().await {
            Ok(mut conn) => feed::unsequenced_campaigns(&mut conn).await,
            Err(err) => Err(err),
        };
        match campaigns {
            Ok(campaigns) => campaigns.iter().for_each(|c| self.wake(c)),
            Err(err) => tracing::debug!(error = %err, "feed sweep failed"),
        }
    }

    /// After a commit that wrote events of the campaign: numbers them and fans them out. Returns at once.
    pub fn wake(&self, campaign_id: &str) {
        self.run(campaign_id, true);
    }

    /// After a commit that numbered events of the campaign itself (an auto-assign batch): fans them out to
    /// this replica's watchers, if it has any. Returns at once.
    pub fn fan_out(&self, campaign_id: &str) {
        if self.has_watchers(campaign_id) {
            self.run(campaign_id, false);
        }
    }

    fn has_watchers(&self, campaign_id: &str) -> bool {
        let campaigns = self.campaigns.lock().expect("feed lock");
        campaigns
            .get(campaign_id)
            .and_then(|campaign| campaign.sender.as_ref())
            .is_some_and(|sender| sender.receiver_count() > 0)
    }

    /// One run per campaign at a time; wake-ups meanwhile make it run once more.
    fn run(&self, campaign_id: &str, sequence: bool) {
        {
            let mut campaigns = self.campaigns.lock().expect("feed lock");
            let campaign = campaigns.entry(campaign_id.to_owned()).or_default();
            campaign.sequence |= sequence;
            if campaign.running {
                campaign.again = true;
                return;
            }
            campaign.running = true;
        }
        let feed = self.clone();
        let campaign_id = campaign_id.to_owned();
        tokio::spawn(async move {
            loop {
                let sequence = {
                    let mut campaigns = feed.campaigns.lock().expect("feed lock");
                    let campaign = campaigns.entry(campaign_id.clone()).or_default();
                    std::mem::take(&mut campaign.sequence)
                };
                if let Err(err) = feed.advance(&campaign_id, sequence).await {
                    tracing::warn!(campaign_id, error = %err, "could not advance the feed");
                }
                let mut campaigns = feed.campaigns.lock().expect("feed lock");
                let campaign = campaigns.entry(campaign_id.clone()).or_default();
                if !std::mem::take(&mut campaign.again) {
                    campaign.running = false;
                    // Forget campaigns nobody watches.
                    if campaign
                        .sender
                        .as_ref()
                        .is_none_or(|s| s.receiver_count() == 0)
                    {
                        campaigns.remove(&campaign_id);
                    }
                    return;
                }
            }
        });
    }

    async fn advance(&self, campaign_id: &str, numbering: bool) -> AppResult<()> {
        let head = if numbering {
            sequence(&self.store, campaign_id).await?
        } else {
            let mut conn = self.store.acquire().await?;
            feed::head(&mut conn, campaign_id).await?
        };
        let (sender, mut fanned, watching) = {
            let campaigns = self.campaigns.lock().expect("feed lock");
            match campaigns.get(campaign_id) {
                Some(Campaign {
                    sender: Some(sender),
                    fanned,
                    watching,
                    ..
                }) if sender.receiver_count() > 0 => {
                    let watching: Vec<String> = watching.keys().cloned().collect();
                    (sender.clone(), *fanned, watching)
                }
                _ => return Ok(()),
            }
        };
        let ids = CampaignIds::new(self.store.opaque_secret().await?, campaign_id);
        let scope = PageScope::feed(campaign_id);
        let mut conn = self.store.acquire().await?;
        while fanned < head {
            let events = feed::after(
                &mut conn,
                campaign_id,
                fanned,
                &EventFilter::default(),
                READ_LIMIT,
            )
            .await?;
            let Some(last) = events.last().and_then(|e| e.seq) else {
                break;
            };
            fanned = last;
            let now = chrono::Utc::now();
            for event in &events {
                let lag = (now - event.occurred_at)
                    .num_microseconds()
                    .unwrap_or(i64::MAX);
                metrics::histogram!(FEED_LAG_SECONDS).record(lag.max(0) as f64 / 1e6);
            }
            let access = access(&mut conn, campaign_id, &watching, &events).await?;
            let places = events
                .iter()
                .map(|e| Place::of(&ids, &scope, e.seq.unwrap_or_default()))
                .collect();
            let _ = sender.send(Arc::new(Fanout {
                events,
                places,
                access,
            }));
        }
        if let Some(campaign) = self
            .campaigns
            .lock()
            .expect("feed lock")
            .get_mut(campaign_id)
        {
            campaign.fanned = campaign.fanned.max(fanned);
        }
        Ok(())
    }

    /// Whether an event that occurred at `at` is past the retention.
    fn expired(&self, at: chrono::DateTime<chrono::Utc>) -> bool {
        chrono::Utc::now() - at
            > chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX)
    }

    /// A receiver of the campaign's fan-out (starting after `head` if it is the first), for `actor_id`
    /// (None: a system caller); the subscription counts them among the watchers until it is dropped.
    fn subscribe(
        &self,
        campaign_id: &str,
        head: i64,
        actor_id: Option<&str>,
    ) -> (broadcast::Receiver<Batch>, Subscription) {
        let mut campaigns = self.campaigns.lock().expect("feed lock");
        let campaign = campaigns.entry(campaign_id.to_owned()).or_default();
        if let Some(actor_id) = actor_id {
            *campaign.watching.entry(actor_id.to_owned()).or_default() += 1;
        }
        let receiver = match &campaign.sender {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = broadcast::channel(self.fanout_batches);
                campaign.sender = Some(sender);
                campaign.fanned = head;
                receiver
            }
        };
        let subscription = Subscription {
            feed: self.clone(),
            campaign_id: campaign_id.to_owned(),
            actor_id: actor_id.map(str::to_owned),
        };
        (receiver, subscription)
    }
}

/// What each of `user_ids` may see of `events`, read together.
async fn access(
    conn: &mut Conn,
    campaign_id: &str,
    user_ids: &[String],
    events: &[AssignmentEvent],
) -> AppResult<HashMap<String, Option<WatcherAccess>>> {
    if user_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<&str> = user_ids.iter().map(String::as_str).collect();
    let conversations: Vec<&str> = events
        .iter()
        .filter_map(|e| e.conversation_id.as_deref())
        .collect();
    let mut access: HashMap<String, Option<WatcherAccess>> =
        user_ids.iter().map(|id| (id.clone(), None)).collect();
    for row in feed::watcher_access(conn, campaign_id, &ids, &conversations).await? {
        access.insert(row.user.user_id.clone(), Some(row));
    }
    Ok(access)
}

/// A watcher's place among its campaign's watchers on this replica, given up when dropped.
pub(super) struct Subscription {
    feed: Feed,
    campaign_id: String,
    actor_id: Option<String>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(actor_id) = &self.actor_id else {
            return;
        };
        let mut campaigns = self.feed.campaigns.lock().expect("feed lock");
        if let Some(campaign) = campaigns.get_mut(&self.campaign_id)
            && let Some(count) = campaign.watching.get_mut(actor_id)
        {
            *count -= 1;
            if *count == 0 {
                campaign.watching.remove(actor_id);
            }
        }
    }
}
