//! The feed (WatchAssignmentEvents): each campaign's events in one gapless order, live.
//!
//! Writers only insert events; after its commit the replica that wrote them numbers them ([`Feed::wake`]:
//! [`sequence`]), and the sequencer NOTIFYs the feed channel. Each replica holds one LISTEN connection
//! ([`Feed::listen`]); when this replica has watchers of the campaign, it reads the new events once and fans
//! them out in-process. A watcher first catches up from the database, then follows the fan-out, and reads
//! the database again for anything the fan-out did not carry (a gap, a lost notification). A replica that
//! dies between a commit and its sequencer leaves the numbering to the periodic sweep.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, mpsc};

use crate::domain::model::{AssignmentEvent, Role};
use crate::domain::paging::PageScope;
use crate::domain::validate::{self, Violations};
use crate::error::{AppError, AppResult, Reason};
use crate::service::{ActorCall, SystemCall, authenticate};
use crate::store::Store;
use crate::store::feed::{self, EventFilter};

/// Events read from the database at a time.
const READ_LIMIT: i64 = 500;
/// Fan-out batches a replica keeps for a campaign's slowest watcher before cutting it off.
const FANOUT_BATCHES: usize = 64;
/// How long a watcher waits for a notification before reading the database anyway (a lost notification
/// delays delivery by at most this much).
const SAFETY_READ: Duration = Duration::from_secs(10);

/// Numbers the campaign's committed events (see `store::feed::sequence`), in a transaction of its own.
pub async fn sequence(store: &Store, campaign_id: &str) -> AppResult<i64> {
    let mut tx = store.begin().await?;
    let (head, _) = feed::sequence(&mut tx, campaign_id).await?;
    tx.commit().await?;
    Ok(head)
}

/// Numbered events, fanned out per campaign.
type Batch = Arc<Vec<AssignmentEvent>>;

#[derive(Default)]
struct Campaign {
    sender: Option<broadcast::Sender<Batch>>,
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
}

impl Feed {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            campaigns: Arc::default(),
        }
    }

    /// Listens for written events until the task is dropped, reconnecting after failures.
    pub async fn listen(self) {
        loop {
            if let Err(err) = self.listen_once().await {
                tracing::warn!(error = %err, "the feed's listener failed; reconnecting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn listen_once(&self) -> Result<(), sqlx::Error> {
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(self.store.pool())
            .await?;
        let mut listener = PgListener::connect_with(self.store.pool()).await?;
        listener.listen(feed::FEED_CHANNEL).await?;
        // Whatever was written while nobody listened.
        self.sweep().await;
        loop {
            let notification = listener.recv().await?;
            if let Some((from, campaign_id)) = notification.payload().split_once('/')
                && from == schema
            {
                self.run(campaign_id, false);
            }
        }
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
        let (sender, mut fanned) = {
            let campaigns = self.campaigns.lock().expect("feed lock");
            match campaigns.get(campaign_id) {
                Some(Campaign {
                    sender: Some(sender),
                    fanned,
                    ..
                }) if sender.receiver_count() > 0 => (sender.clone(), *fanned),
                _ => return Ok(()),
            }
        };
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
            let _ = sender.send(Arc::new(events));
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

    /// A receiver of the campaign's fan-out, and the number it starts after.
    fn subscribe(&self, campaign_id: &str, head: i64) -> broadcast::Receiver<Batch> {
        let mut campaigns = self.campaigns.lock().expect("feed lock");
        let campaign = campaigns.entry(campaign_id.to_owned()).or_default();
        match &campaign.sender {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = broadcast::channel(FANOUT_BATCHES);
                campaign.sender = Some(sender);
                campaign.fanned = head;
                receiver
            }
        }
    }
}

/// Who watches: a user (sees what they may view) or a system (sees everything).
#[derive(Debug, Clone)]
pub enum Watcher {
    Actor(ActorCall),
    System(SystemCall),
}

impl Watcher {
    fn campaign_id(&self) -> &str {
        match self {
            Watcher::Actor(call) => &call.campaign_id,
            Watcher::System(call) => &call.campaign_id,
        }
    }
}

/// WatchAssignmentEvents' request, as sent.
#[derive(Debug, Clone, Default)]
pub struct WatchRequest {
    pub cursor: String,
    pub conversation_ids: Vec<String>,
    pub assignee_id: String,
}

/// An event as delivered, with its opaque cursor.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub event: AssignmentEvent,
    pub cursor: String,
}

/// WatchAssignmentEvents: validates, authenticates, and streams the feed into `out` until the receiver
/// goes away (Ok) or the watcher falls too far behind (RESOURCE_EXHAUSTED, sent into `out`).
pub async fn watch(
    store: &Store,
    feed_hub: &Feed,
    watcher: Watcher,
    request: WatchRequest,
) -> AppResult<(
    mpsc::Receiver<AppResult<Delivered>>,
    impl Future<Output = ()> + Send + use<>,
)> {
    let campaign_id = watcher.campaign_id().to_owned();
    let cursors = PageScope::feed(&campaign_id);
    let mut violations = Violations::default();
    let after = violations.check(cursors.after_event(&request.cursor).map_err(|_| {
        AppError::invalid(
            "cursor",
            "cursor is not one this campaign's feed issued; pass an event's cursor unchanged, or leave it \
             empty to watch from now",
        )
    }));
    let conversation_ids = violations.check(validate::id_list(
        "conversation_ids",
        &request.conversation_ids,
        validate::MAX_IDS_PER_REQUEST,
    ));
    let assignee_id = violations.check(validate::optional_id("assignee_id", &request.assignee_id));
    violations.finish()?;
    let mut conn = store.acquire().await?;
    // Organizers see what they may view; admins and systems everything.
    let organizer = match &watcher {
        Watcher::Actor(call) => {
            let actor = authenticate(&mut conn, call).await?;
            (actor.role == Role::Organizer).then_some(actor.user_id)
        }
        Watcher::System(_) => None,
    };
    let head = match after {
        Some(after) => {
            let head = feed::head(&mut conn, &campaign_id).await?;
            if after > head {
                return Err(AppError::invalid(
                    "cursor",
                    "cursor is ahead of this campaign's feed; pass an event's cursor unchanged",
                ));
            }
            after
        }
        None => sequence(store, &campaign_id).await?,
    };
    drop(conn);
    let receiver = feed_hub.subscribe(&campaign_id, head);
    let (tx, rx) = mpsc::channel(64);
    let stream = Stream {
        store: store.clone(),
        campaign_id,
        filter: EventFilter {
            conversation_ids,
            assignee_id,
        },
        organizer,
        cursors,
        sent: head,
        tx,
    };
    Ok((rx, stream.run(receiver)))
}

struct Stream {
    store: Store,
    campaign_id: String,
    filter: EventFilter,
    organizer: Option<String>,
    cursors: PageScope,
    /// The last feed number handled (delivered, or filtered out).
    sent: i64,
    tx: mpsc::Sender<AppResult<Delivered>>,
}

impl Stream {
    async fn run(mut self, mut receiver: broadcast::Receiver<Batch>) {
        loop {
            if self.catch_up().await.is_err() {
                return;
            }
            let batch = tokio::select! {
                () = self.tx.closed() => return,
                batch = tokio::time::timeout(SAFETY_READ, receiver.recv()) => batch,
            };
            match batch {
                // Nothing heard for a while: read anyway.
                Err(_) => continue,
                Ok(Ok(batch)) => {
                    let fresh: Vec<AssignmentEvent> = batch
                        .iter()
                        .filter(|e| e.seq.is_some_and(|seq| seq > self.sent))
                        .cloned()
                        .collect();
                    // A gap before the batch is filled from the database by the next catch-up.
                    if fresh.first().and_then(|e| e.seq) == Some(self.sent + 1)
                        && self.deliver(fresh).await.is_err()
                    {
                        return;
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    let _ = self
                        .tx
                        .send(Err(AppError::new(
                            Reason::FeedReaderTooSlow,
                            "this watcher fell too far behind the feed; resume from the last cursor you received",
                        )))
                        .await;
                    return;
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => return,
            }
        }
    }

    /// Reads the database until it has delivered everything numbered so far.
    async fn catch_up(&mut self) -> Result<(), ()> {
        loop {
            let events = {
                let mut conn = match self.store.acquire().await {
                    Ok(conn) => conn,
                    Err(err) => return self.fail(err).await,
                };
                match feed::after(
                    &mut conn,
                    &self.campaign_id,
                    self.sent,
                    &EventFilter::default(),
                    READ_LIMIT,
                )
                .await
                {
                    Ok(events) => events,
                    Err(err) => return self.fail(err).await,
                }
            };
            let full = events.len() as i64 == READ_LIMIT;
            if events.is_empty() {
                return Ok(());
            }
            self.deliver(events).await?;
            if !full {
                return Ok(());
            }
        }
    }

    async fn fail(&self, err: AppError) -> Result<(), ()> {
        let _ = self.tx.send(Err(err)).await;
        Err(())
    }

    /// Sends the events this watcher may and wants to see; every event moves `sent`.
    async fn deliver(&mut self, events: Vec<AssignmentEvent>) -> Result<(), ()> {
        let Some(last) = events.last().and_then(|e| e.seq) else {
            return Ok(());
        };
        let viewable = match &self.organizer {
            Some(organizer) => {
                let ids: Vec<&str> = events
                    .iter()
                    .filter_map(|e| e.conversation_id.as_deref())
                    .collect();
                let mut conn = match self.store.acquire().await {
                    Ok(conn) => conn,
                    Err(err) => return self.fail(err).await,
                };
                match feed::viewable(&mut conn, &self.campaign_id, organizer, &ids).await {
                    Ok(viewable) => Some(viewable),
                    Err(err) => return self.fail(err).await,
                }
            }
            None => None,
        };
        for event in events {
            let seq = event.seq.unwrap_or_default();
            let allowed = match (&viewable, &event.conversation_id) {
                (None, _) => true,
                (Some(viewable), Some(conversation)) => viewable.contains(conversation),
                // Availability: an organizer sees their own.
                (Some(_), None) => event.user_id == self.organizer,
            };
            if allowed && self.wanted(&event) {
                let cursor = self.cursors.token(&seq.to_string());
                if self.tx.send(Ok(Delivered { event, cursor })).await.is_err() {
                    return Err(());
                }
            }
            self.sent = seq;
        }
        self.sent = self.sent.max(last);
        Ok(())
    }

    fn wanted(&self, event: &AssignmentEvent) -> bool {
        let filter = &self.filter;
        let conversation = filter.conversation_ids.is_empty()
            || event
                .conversation_id
                .as_ref()
                .is_some_and(|c| filter.conversation_ids.contains(c));
        let user = filter.assignee_id.as_ref().is_none_or(|user| {
            [&event.from_user_id, &event.to_user_id, &event.user_id]
                .iter()
                .any(|u| u.as_ref() == Some(user))
        });
        conversation && user
    }
}
