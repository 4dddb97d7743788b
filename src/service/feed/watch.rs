//! One watcher of the feed: validates and authenticates, catches up from the database, then follows the
//! replica's fan-out, filtering what the watcher may and wants to see.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use super::{Batch, Delivered, Feed, Place, READ_LIMIT, Subscription, sequence};
use crate::domain::actor;
use crate::domain::model::{AssignmentEvent, Role};
use crate::domain::opaque::CampaignIds;
use crate::domain::paging::PageScope;
use crate::domain::validate::{self, Violations};
use crate::error::{AppError, AppResult, Reason};
use crate::service::{ActorCall, Caller, authenticate};
use crate::store::feed::{self, EventFilter, WatcherAccess};
use crate::store::{Conn, Store};

/// How long a watcher waits for a notification before reading the database anyway (a lost notification
/// delays delivery by at most this much).
const SAFETY_READ: Duration = Duration::from_secs(10);
/// WatchAssignmentEvents' request, as sent.
#[derive(Debug, Clone, Default)]
pub struct WatchRequest {
    pub cursor: String,
    pub conversation_ids: Vec<String>,
    pub assignee_id: String,
}

/// WatchAssignmentEvents: validates, authenticates, and streams the feed into `out` until the receiver
/// goes away (Ok) or the watcher falls too far behind (RESOURCE_EXHAUSTED, sent into `out`).
pub async fn watch(
    store: &Store,
    feed_hub: &Feed,
    watcher: Caller,
    request: WatchRequest,
) -> AppResult<(
    mpsc::Receiver<AppResult<Delivered>>,
    impl Future<Output = ()> + Send + use<>,
)> {
    let campaign_id = watcher.campaign_id().to_owned();
    let cursors = PageScope::feed(&campaign_id);
    let ids = CampaignIds::new(store.opaque_secret().await?, &campaign_id);
    let mut violations = Violations::default();
    let after = violations.check(cursors.after_event(&ids, &request.cursor).map_err(|_| {
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
    // The watchers' turn, not the calls' share of the pool: one connection at a time, never two.
    let turn = feed_hub.read_turn().await;
    let (actor, resumed) = {
        let mut conn = store.acquire().await?;
        // Refused at once if the actor cannot act; who they are is read again for every batch delivered.
        let actor = match watcher {
            Caller::Actor(call) => {
                authenticate(&mut conn, &call).await?;
                Some(call)
            }
            Caller::System(_) => None,
        };
        let resumed = check_resume(&mut conn, feed_hub, &campaign_id, after).await?;
        (actor, resumed)
    };
    let head = match resumed {
        Some(after) => after,
        None => sequence(store, &campaign_id).await?,
    };
    drop(turn);
    let actor_id = actor.as_ref().map(|call| call.actor_id.as_str());
    let (receiver, subscription) = feed_hub.subscribe(&campaign_id, head, actor_id);
    let (tx, rx) = mpsc::channel(feed_hub.watcher_queue);
    let stream = Stream {
        store: store.clone(),
        feed: feed_hub.clone(),
        campaign_id,
        filter: EventFilter {
            conversation_ids,
            assignee_id,
        },
        actor,
        cursors,
        ids,
        sent: head,
        tx,
        _subscription: subscription,
    };
    Ok((rx, stream.run(receiver)))
}

/// Where a watcher resuming after `after` starts: refused if the cursor is ahead of the feed, or if
/// resuming would replay more than the retention.
async fn check_resume(
    conn: &mut Conn,
    feed_hub: &Feed,
    campaign_id: &str,
    after: Option<i64>,
) -> AppResult<Option<i64>> {
    let Some(after) = after else {
        return Ok(None);
    };
    let head = feed::head(conn, campaign_id).await?;
    if after > head {
        return Err(AppError::invalid(
            "cursor",
            "cursor is ahead of this campaign's feed; pass an event's cursor unchanged",
        ));
    }
    if let Some(next) = feed::occurred_at(conn, campaign_id, after + 1).await?
        && feed_hub.expired(next)
    {
        return Err(cursor_expired(feed_hub.retention));
    }
    Ok(Some(after))
}

fn cursor_expired(retention: Duration) -> AppError {
    AppError::new(
        Reason::FeedCursorExpired,
        format!(
            "cursor is older than the feed's retention ({}): re-sync by reading the current state \
             (ListConversations), then watch from now with an empty cursor",
            as_written(retention)
        ),
    )
}

/// What a fan-out batch brings besides its events: who may see what, and each event's place.
#[derive(Clone, Copy)]
struct Fanned<'a> {
    access: &'a HashMap<String, Option<WatcherAccess>>,
    places: &'a [Place],
}

/// A duration as FEED_RETENTION takes it: "7d", "12h", "90s".
fn as_written(retention: Duration) -> String {
    match retention.as_secs() {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s => format!("{s}s"),
    }
}

struct Stream {
    store: Store,
    /// For turns at the watchers' read budget.
    feed: Feed,
    campaign_id: String,
    filter: EventFilter,
    /// The acting user watching (None: a system caller, who sees everything).
    actor: Option<ActorCall>,
    cursors: PageScope,
    ids: CampaignIds,
    /// The last feed number handled (delivered, or filtered out).
    sent: i64,
    tx: mpsc::Sender<AppResult<Delivered>>,
    _subscription: Subscription,
}

impl Stream {
    async fn run(mut self, mut receiver: broadcast::Receiver<Batch>) {
        // The database is read only to start, after a gap and after a quiet spell: a watcher that keeps up
        // is fed from the fan-out alone, so watchers cost the database nothing per event.
        let mut read_database = true;
        loop {
            if std::mem::take(&mut read_database) && self.catch_up().await.is_err() {
                return;
            }
            let batch = tokio::select! {
                () = self.tx.closed() => return,
                batch = tokio::time::timeout(SAFETY_READ, receiver.recv()) => batch,
            };
            match batch {
                // Nothing heard for a while: read anyway.
                Err(_) => read_database = true,
                Ok(Ok(batch)) => {
                    // Numbers rise through a batch: what this watcher has not handled is a suffix.
                    let Some(skip) = batch
                        .events
                        .iter()
                        .position(|e| e.seq.is_some_and(|seq| seq > self.sent))
                    else {
                        continue;
                    };
                    if batch.events[skip].seq != Some(self.sent + 1) {
                        // A gap before the batch: fill it (and the batch) from the database.
                        read_database = true;
                    } else {
                        let fanned = Fanned {
                            access: &batch.access,
                            places: &batch.places[skip..],
                        };
                        if self
                            .deliver(&batch.events[skip..], Some(fanned))
                            .await
                            .is_err()
                        {
                            return;
                        }
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
            let read = {
                let _turn = tokio::select! {
                    () = self.tx.closed() => return Err(()),
                    turn = self.feed.read_turn() => turn,
                };
                self.read_after().await
            };
            // The turn is given back before anything is sent: a slow client never holds it.
            let events = match read {
                Ok(events) => events,
                Err(err) => return self.fail(err).await,
            };
            let full = events.len() as i64 == READ_LIMIT;
            if events.is_empty() {
                return Ok(());
            }
            self.deliver(&events, None).await?;
            if !full {
                return Ok(());
            }
        }
    }

    /// The campaign's events after `sent`, a page of them.
    async fn read_after(&self) -> AppResult<Vec<AssignmentEvent>> {
        let mut conn = self.store.acquire().await?;
        feed::after(
            &mut conn,
            &self.campaign_id,
            self.sent,
            &EventFilter::default(),
            READ_LIMIT,
        )
        .await
    }

    async fn fail(&self, err: AppError) -> Result<(), ()> {
        let _ = self.tx.send(Err(err)).await;
        Err(())
    }

    /// Sends the events this watcher may and wants to see; every event moves `sent`. Who the watcher is
    /// and the events' places come with a fan-out batch (read and made once for every watcher) or are read
    /// and made here.
    async fn deliver(
        &mut self,
        events: &[AssignmentEvent],
        fanned: Option<Fanned<'_>>,
    ) -> Result<(), ()> {
        let Some(last) = events.last().and_then(|e| e.seq) else {
            return Ok(());
        };
        // Who the watcher is now, read with each batch: organizers see what they may view (a demotion
        // narrows the stream at once), admins everything, and a deactivated actor's stream ends.
        let organizer_view = match &self.actor {
            Some(call) => {
                let access = match fanned.and_then(|f| f.access.get(&call.actor_id)) {
                    Some(access) => access.clone(),
                    // Subscribed after the batch was read, or catching up.
                    None => match self.read_access(call, events).await {
                        Ok(access) => access,
                        Err(err) => return self.fail(err).await,
                    },
                };
                let user = access.as_ref().map(|a| a.user.to_ref());
                let actor = match actor::authenticate(&self.campaign_id, &call.actor_id, user) {
                    Ok(actor) => actor,
                    Err(err) => return self.fail(err).await,
                };
                match (actor.role, access) {
                    (Role::Organizer, Some(access)) => {
                        let viewable: HashSet<String> = access.viewable.into_iter().collect();
                        Some((actor.user_id, viewable))
                    }
                    _ => None,
                }
            }
            None => None,
        };
        for (i, event) in events.iter().enumerate() {
            let seq = event.seq.unwrap_or_default();
            let allowed = match (&organizer_view, &event.conversation_id) {
                (None, _) => true,
                (Some((_, viewable)), Some(conversation)) => viewable.contains(conversation),
                // Availability: an organizer sees their own.
                (Some((organizer, _)), None) => event.user_id.as_ref() == Some(organizer),
            };
            if allowed && self.wanted(event) {
                let place = match fanned {
                    Some(fanned) => fanned.places[i].clone(),
                    None => Place::of(&self.ids, &self.cursors, seq),
                };
                let delivered = Delivered {
                    event: event.clone(),
                    place,
                };
                if self.tx.send(Ok(delivered)).await.is_err() {
                    return Err(());
                }
            }
            self.sent = seq;
        }
        self.sent = self.sent.max(last);
        Ok(())
    }

    async fn read_access(
        &self,
        call: &ActorCall,
        events: &[AssignmentEvent],
    ) -> AppResult<Option<WatcherAccess>> {
        let _turn = self.feed.read_turn().await;
        let mut conn = self.store.acquire().await?;
        let ids: Vec<&str> = events
            .iter()
            .filter_map(|e| e.conversation_id.as_deref())
            .collect();
        let rows = feed::watcher_access(
            &mut conn,
            &self.campaign_id,
            &[call.actor_id.as_str()],
            &ids,
        )
        .await?;
        Ok(rows.into_iter().next())
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
