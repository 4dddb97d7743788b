//! The NATS JetStream relay: every campaign's feed, published to the platform's bus in feed order, exactly
//! once, whatever fails (on when `--nats-url` is set; see `docs/relay.md`).
//!
//! Each campaign's events go to the subject `<prefix>.<campaign>` (`subject`), one message per event: the
//! protobuf `AssignmentEvent` WatchAssignmentEvents streams (with its cursor), `Nats-Msg-Id` its feed id
//! `<campaign>:<seq>`, and `Nats-Expected-Last-Subject-Sequence` the stream sequence of the campaign's
//! previous message, so JetStream refuses a gap or a repeat instead of storing it. Where a campaign's relay
//! stands lives in PostgreSQL (`store::relay`) and moves only after JetStream acknowledged; one replica
//! relays a campaign at a time, under a lease it renews as it goes and another takes once it passed. A
//! publish refused for its expected sequence (a replica that died between JetStream's ack and its own
//! record, or one whose lease was taken) reads the subject's last message and goes on after it.

mod subject;
mod watch;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self, Context};
use prost::Message;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::domain::model::AssignmentEvent;
use crate::domain::opaque::{CampaignIds, Secret};
use crate::domain::paging::PageScope;
use crate::error::AppResult;
use crate::grpc::convert;
use crate::observability::{RELAY_LAG_EVENTS, RELAY_LAG_SECONDS, RELAY_PUBLISHED, RELAY_REJECTED};
use crate::service::agenda::{HeadsMoved, Stale};
use crate::service::feed::{Delivered, Place};
use crate::store::notices::{self, Notice};
use crate::store::relay::{self as positions, Claimed, Claims, Unrelayed};
use crate::store::{Campaigns, Store};
use watch::Watch;

pub use subject::{campaign_of, message_id, seq_of, token as subject_token};

/// The relay's health, beside the service's own: NOT_SERVING while NATS (or its stream) cannot be reached.
/// The service keeps serving gRPC callers either way.
pub const HEALTH_NAME: &str = "assignment.v1.Relay";
/// The `Content-Type` of every message.
pub const CONTENT_TYPE: &str = "application/x-protobuf; messageType=assignment.v1.AssignmentEvent";
/// The header naming the event's kind (`ASSIGNMENT_ACTION_ASSIGN`, ...).
pub const KIND_HEADER: &str = "Assignment-Event-Kind";
/// Campaigns one pass takes the lease of, at most.
const CAMPAIGNS_PER_PASS: i64 = 64;
/// `relay_rejected_total{reason}`: a campaign's first message in a burst refused, its position behind the
/// stream (a resync follows).
const STALE_POSITION: &str = "stale_position";
/// `relay_rejected_total{reason}`: a later message refused, another publisher having written into the burst
/// (sent again in the next round).
const BURST_INTERLEAVED: &str = "burst_interleaved";
/// Events read from the feed at a time, per campaign.
const READ_LIMIT: i64 = 256;
/// Messages sent before their acknowledgements are awaited, at most (the client bounds those in flight).
const BURST: usize = 1024;

/// What the relay is told to do.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub url: String,
    /// The JetStream stream, made if missing.
    pub stream: String,
    /// Subjects are `<subject_prefix>.<campaign>`.
    pub subject_prefix: String,
    pub duplicate_window: Duration,
    /// How long the stream keeps a message (0: for ever).
    pub max_age: Duration,
    /// How long a replica holds a campaign without renewing.
    pub lease: Duration,
    /// How often a replica looks for campaigns to relay.
    pub interval: Duration,
    /// Each transaction touches one campaign (`--single-campaign-transactions`): campaigns are claimed,
    /// read and recorded one by one.
    pub single_campaign: bool,
}

/// One replica's relay: its lease holder id, its connection and the stream.
pub struct Relay {
    store: Store,
    config: RelayConfig,
    holder: String,
    context: Context,
    stream: Option<Stream>,
    /// The campaigns whose feed head moved since the last pass (every replica hears of every campaign's).
    heads_moved: HeadsMoved,
    /// Campaigns another replica holds, to look at again, and which replica relays.
    watch: Watch,
}

/// A campaign's next events, read in one round of a pass, and where its relay stands before them.
struct Round {
    position: Claimed,
    events: Vec<AssignmentEvent>,
}

/// Where a campaign's relay got to in a round.
struct Published {
    position: Claimed,
    /// Whether the position moved (messages acknowledged, or found further on by a resync).
    moved: bool,
    /// Whether the campaign may have more to relay now.
    more: bool,
    /// Whether a message was refused because another publisher wrote into the burst.
    interleaved: bool,
    /// What stopped it early, if anything did.
    error: Option<String>,
}

/// A campaign's messages sent in a burst, their acknowledgements still to come.
struct SentRun {
    position: Claimed,
    subject: String,
    /// Whether the round read as many events as it could (the feed may hold more).
    full: bool,
    /// Each message's feed number and its acknowledgement to come.
    acks: Vec<(i64, PublishAckFuture)>,
    /// Messages the burst did not send (NATS failed meanwhile).
    unsent: usize,
    failure: Option<String>,
}

/// The round's campaigns in bursts of at most `BURST` messages, each campaign's events in one burst.
fn bursts(rounds: Vec<Round>) -> Vec<Vec<Round>> {
    let mut bursts: Vec<Vec<Round>> = Vec::new();
    let mut size = BURST;
    for round in rounds {
        if size + round.events.len() > BURST {
            bursts.push(Vec::new());
            size = 0;
        }
        size += round.events.len();
        bursts.last_mut().expect("a burst was opened").push(round);
    }
    bursts
}

impl Relay {
    /// Connects (in the background if NATS is not there yet: the service serves meanwhile). `heads_moved`
    /// is raised by this replica's listener (`service::notices`).
    pub async fn connect(
        store: Store,
        config: RelayConfig,
        holder: String,
        heads_moved: HeadsMoved,
    ) -> Result<Self, String> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(&config.url)
            .await
            .map_err(|e| format!("cannot connect to NATS at {}: {e}", config.url))?;
        Ok(Self {
            store,
            config,
            holder,
            context: jetstream::new(client),
            stream: None,
            heads_moved,
            watch: Watch::default(),
        })
    }

    /// Relays until the task is dropped; a pass that fails (NATS or PostgreSQL away) is logged, reported
    /// by health, and tried again at the next tick.
    ///
    /// A tick claims only the campaigns there may be something to relay for, by their keys: those whose
    /// feed head moved since the last pass (the listener hears every campaign's), and those another replica
    /// held whose lease may have lapsed since (`Watch`). It claims every campaign (a read of every
    /// campaign's lease and head; docs/scaling.md) only at start, after the listener reconnects (it may have
    /// missed notifications), after a failed pass, and every half lease: the backstop for campaigns no
    /// notification named to this replica, such as those a relaying replica that died left behind.
    pub async fn run(mut self, health: HealthReporter) {
        health
            .set_service_status(HEALTH_NAME, ServingStatus::NotServing)
            .await;
        // Exported from the start, so a dashboard shows zero rather than nothing.
        metrics::counter!(RELAY_PUBLISHED).increment(0);
        for reason in [STALE_POSITION, BURST_INTERLEAVED] {
            metrics::counter!(RELAY_REJECTED, "reason" => reason).increment(0);
        }
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut healthy = None;
        let mut backstop = tokio::time::Instant::now();
        loop {
            ticker.tick().await;
            let now = tokio::time::Instant::now();
            let moved = self.heads_moved.take();
            let every =
                matches!(moved, Some(Stale::All)) || healthy != Some(true) || now >= backstop;
            let named = if every {
                backstop = now + self.config.lease / 2;
                None
            } else {
                let mut named = match moved {
                    Some(Stale::Some(ids)) => ids,
                    _ => Vec::new(),
                };
                named.extend(self.watch.due(now));
                named.sort();
                named.dedup();
                if named.is_empty() {
                    continue;
                }
                if named.len() > CAMPAIGNS_PER_PASS as usize {
                    let rest = named.split_off(CAMPAIGNS_PER_PASS as usize);
                    self.heads_moved.restore(Stale::Some(rest));
                }
                Some(named)
            };
            let look = named.as_deref().map_or(Campaigns::Every, Campaigns::Named);
            let result = self.pass(look).await;
            let now_healthy = result.is_ok();
            if let Err(err) = result {
                tracing::warn!(error = %err, "the relay to NATS could not publish; trying again");
                // The stream may have to be made again (a NATS server that lost it).
                self.stream = None;
            }
            if healthy != Some(now_healthy) {
                let status = if now_healthy {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                health.set_service_status(HEALTH_NAME, status).await;
                healthy = Some(now_healthy);
            }
        }
    }

    /// One pass: the campaigns with events to relay whose lease this replica holds or takes, relayed up to
    /// their heads. Each round reads every campaign's next events in one statement, publishes them in
    /// bursts (`publish`), and records where each campaign got to in one statement; a campaign that had
    /// more goes round again.
    async fn pass(&mut self, look: Campaigns<'_>) -> Result<(), String> {
        let stream = self.stream().await?;
        let mut positions = self.claim(look).await.map_err(|e| e.to_string())?;
        let secret = self
            .store
            .opaque_secret()
            .await
            .map_err(|e| e.to_string())?;
        if positions.is_empty() {
            return Ok(());
        }
        let mut last_known = stream
            .get_info()
            .await
            .map_err(|e| format!("cannot read stream {}: {e}", self.config.stream))?
            .state
            .last_sequence;
        // After a burst another publisher wrote into, the next round sends each campaign's first message
        // only (its expectation is the position's, never predicted): what was refused is not sent again and
        // again while the other publisher goes on.
        let mut tails = true;
        while !positions.is_empty() {
            let rounds = self.read(positions).await?;
            let mut published = Vec::with_capacity(rounds.len());
            for burst in bursts(rounds) {
                published.extend(
                    self.publish(&stream, secret, burst, &mut last_known, tails)
                        .await,
                );
            }
            tails = !published.iter().any(|p| p.interleaved);
            let moved: Vec<Claimed> = published
                .iter()
                .filter(|p| p.moved)
                .map(|p| p.position.clone())
                .collect();
            let held = self.advance(&moved).await?;
            if let Some(err) = published.iter().find_map(|p| p.error.clone()) {
                return Err(err);
            }
            positions = published
                .into_iter()
                .filter(|p| p.more && (!p.moved || held.contains(&p.position.campaign_id)))
                .map(|p| p.position)
                .collect();
        }
        Ok(())
    }

    /// The campaigns among `look` with events to relay whose lease this replica holds or takes (see
    /// `positions::claim`), in one statement, or one campaign per statement; what it found of the others is
    /// kept in the watch. A claim that took as many as one pass relays leaves the rest for the next tick.
    async fn claim(&mut self, look: Campaigns<'_>) -> AppResult<Vec<Claimed>> {
        let (holder, lease) = (self.holder.as_str(), self.config.lease);
        let mut conn = self.store.acquire().await?;
        let now = tokio::time::Instant::now();
        let claims = if !self.config.single_campaign {
            let relaying = match look {
                Campaigns::Every => None,
                Campaigns::Named(_) => self.watch.relaying(now),
            };
            positions::claim(&mut conn, holder, lease, CAMPAIGNS_PER_PASS, look, relaying).await?
        } else {
            let (campaign_ids, relaying) = match look {
                Campaigns::Every => (
                    positions::unrelayed_campaigns(&mut conn, CAMPAIGNS_PER_PASS).await?,
                    positions::relaying(&mut conn).await?,
                ),
                Campaigns::Named(ids) => {
                    (ids.to_vec(), self.watch.relaying(now).map(str::to_owned))
                }
            };
            let mut claims = Claims {
                relaying: relaying.clone(),
                ..Claims::default()
            };
            for one in campaign_ids.chunks(1) {
                let claim = positions::claim(
                    &mut conn,
                    holder,
                    lease,
                    1,
                    Campaigns::Named(one),
                    relaying.as_deref(),
                )
                .await?;
                claims.ours.extend(claim.ours);
                claims.theirs.extend(claim.theirs);
                // Holder ids are UUIDs: their order is the same as the database's.
                claims.relaying = match (claims.relaying.take(), claim.relaying) {
                    (Some(known), Some(found)) => Some(known.min(found)),
                    (known, found) => known.or(found),
                };
            }
            claims
        };
        let named = match look {
            Campaigns::Every => None,
            Campaigns::Named(ids) => Some(ids),
        };
        self.watch.learn(holder, named, &claims, now, lease);
        if claims.ours.len() >= CAMPAIGNS_PER_PASS as usize {
            match named {
                None => self.heads_moved.restore(Stale::All),
                Some(ids) => self.heads_moved.restore(Stale::Some(ids.to_vec())),
            }
        }
        Ok(claims.ours)
    }

    /// Each campaign's next events after its position (at most `READ_LIMIT`), in feed order: in one
    /// statement, or one campaign's per transaction.
    async fn read(&self, positions: Vec<Claimed>) -> Result<Vec<Round>, String> {
        let chunks: Vec<&[Claimed]> = if self.config.single_campaign {
            positions.chunks(1).collect()
        } else {
            vec![positions.as_slice()]
        };
        let mut unrelayed = Vec::new();
        for chunk in chunks {
            let mut tx = self.store.begin_keyed().await.map_err(|e| e.to_string())?;
            let read = positions::unrelayed(&mut tx, chunk, READ_LIMIT)
                .await
                .map_err(|e| e.to_string())?;
            tx.commit().await.map_err(|e| e.to_string())?;
            unrelayed.extend(read);
        }
        let mut rounds: HashMap<String, Round> = positions
            .into_iter()
            .map(|position| {
                let round = Round {
                    position,
                    events: Vec::new(),
                };
                (round.position.campaign_id.clone(), round)
            })
            .collect();
        for Unrelayed { campaign_id, event } in unrelayed {
            if let Some(round) = rounds.get_mut(&campaign_id) {
                round.events.push(event);
            }
        }
        Ok(rounds
            .into_values()
            .filter(|round| !round.events.is_empty())
            .map(|mut round| {
                round.events.sort_by_key(|event| event.seq);
                round
            })
            .collect())
    }

    /// Records the campaigns' new positions (renewing their leases), in one statement or one campaign's per
    /// transaction; returns those this replica still holds. The commit does not wait for its flush: a position lost in a crash only makes the next
    /// publish be refused for its expected sequence, and `resync` finds the true one in the stream.
    async fn advance(&self, moved: &[Claimed]) -> Result<HashSet<String>, String> {
        if moved.is_empty() {
            return Ok(HashSet::new());
        }
        let chunks: Vec<&[Claimed]> = if self.config.single_campaign {
            moved.chunks(1).collect()
        } else {
            vec![moved]
        };
        let mut held = HashSet::new();
        for chunk in chunks {
            let mut tx = self
                .store
                .begin_keyed_unflushed()
                .await
                .map_err(|e| e.to_string())?;
            let still = positions::advance(&mut tx, &self.holder, chunk, self.config.lease)
                .await
                .map_err(|e| e.to_string())?;
            tx.commit().await.map_err(|e| e.to_string())?;
            held.extend(still);
        }
        Ok(held)
    }

    /// The stream, made if missing (once per connection).
    async fn stream(&mut self) -> Result<Stream, String> {
        if let Some(stream) = &self.stream {
            return Ok(stream.clone());
        }
        let config = stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![format!("{}.>", self.config.subject_prefix)],
            max_age: self.config.max_age,
            duplicate_window: self.config.duplicate_window,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let stream = self
            .context
            .get_or_create_stream(config)
            .await
            .map_err(|e| {
                format!(
                    "cannot find or make JetStream stream {}: {e}",
                    self.config.stream
                )
            })?;
        self.stream = Some(stream.clone());
        Ok(stream)
    }

    /// Publishes a burst of campaigns' events: every message sent at once, then their acknowledgements
    /// read in order. Each campaign's first message expects the stream sequence the campaign's position
    /// records as its subject's last; each later one expects the one before it: its message id as the
    /// stream's last, and the stream sequence it was predicted to get (`last_known` plus its place in the
    /// burst) as its subject's last. So JetStream stores a message only right after the event before it,
    /// and a burst another publisher wrote into is refused from there on (sent again in the next round)
    /// instead of leaving a gap.
    async fn publish(
        &self,
        stream: &Stream,
        secret: &Secret,
        burst: Vec<Round>,
        last_known: &mut u64,
        tails: bool,
    ) -> Vec<Published> {
        let mut sent = Vec::with_capacity(burst.len());
        let mut offset = 0;
        let mut failure = None;
        for Round {
            position,
            mut events,
        } in burst
        {
            let (count, full) = (events.len(), events.len() as i64 >= READ_LIMIT);
            if !tails {
                events.truncate(1);
            }
            let campaign_id = position.campaign_id.clone();
            let subject = subject::of(&self.config.subject_prefix, &campaign_id);
            let ids = CampaignIds::new(secret, &campaign_id);
            let cursors = PageScope::feed(&campaign_id);
            let mut acks = Vec::with_capacity(events.len());
            // The previous message of this campaign in the burst: its feed number, its predicted sequence.
            let mut previous: Option<(i64, u64)> = None;
            for event in events {
                let seq = event.seq.unwrap_or_default();
                let message = convert::event(Delivered {
                    place: Place::of(&ids, &cursors, seq),
                    event,
                });
                let mut headers = HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    message_id(&campaign_id, seq).as_str(),
                );
                let expected_subject_seq = match previous {
                    None => position.subject_seq as u64,
                    Some((previous_seq, predicted)) => {
                        headers.insert(
                            async_nats::header::NATS_EXPECTED_LAST_MESSAGE_ID,
                            message_id(&campaign_id, previous_seq).as_str(),
                        );
                        predicted
                    }
                };
                headers.insert(
                    async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                    expected_subject_seq.to_string().as_str(),
                );
                headers.insert("Content-Type", CONTENT_TYPE);
                headers.insert(KIND_HEADER, message.action().as_str_name());
                offset += 1;
                previous = Some((seq, *last_known + offset));
                match self
                    .context
                    .publish_with_headers(subject.clone(), headers, message.encode_to_vec().into())
                    .await
                {
                    Ok(ack) => acks.push((seq, ack)),
                    Err(err) => {
                        failure = Some(format!("cannot publish to {subject}: {err}"));
                        break;
                    }
                }
            }
            let unsent = count - acks.len();
            sent.push(SentRun {
                position,
                subject,
                full,
                acks,
                unsent,
                failure: failure.take(),
            });
            if sent.last().is_some_and(|run| run.failure.is_some()) {
                break;
            }
        }
        let mut published = Vec::with_capacity(sent.len());
        for SentRun {
            mut position,
            subject,
            full,
            acks,
            unsent,
            failure,
        } in sent
        {
            let (mut moved, mut stale, mut refused, mut error) = (false, false, false, failure);
            for (n, (seq, ack)) in acks.into_iter().enumerate() {
                match ack.await {
                    Ok(ack) => {
                        metrics::counter!(RELAY_PUBLISHED).increment(1);
                        position.relayed_seq = seq;
                        position.subject_seq = ack.sequence as i64;
                        *last_known = (*last_known).max(ack.sequence);
                        moved = true;
                    }
                    Err(err)
                        if matches!(
                            err.kind(),
                            PublishErrorKind::WrongLastSequence
                                | PublishErrorKind::WrongLastMessageId
                        ) =>
                    {
                        // The first message's expectation came from the position: refused, the position
                        // is behind the stream. A later one's was predicted: another publisher wrote.
                        let reason = if n == 0 {
                            STALE_POSITION
                        } else {
                            BURST_INTERLEAVED
                        };
                        metrics::counter!(RELAY_REJECTED, "reason" => reason).increment(1);
                        stale |= n == 0;
                        refused = true;
                    }
                    Err(err) => {
                        error.get_or_insert(format!("JetStream refused {subject}: {err}"));
                    }
                }
            }
            if stale && error.is_none() {
                // The subject moved past what this replica knew: go on after its last message.
                match self.resync(stream, &subject, &mut position).await {
                    Ok(()) => moved = true,
                    Err(err) => error = Some(err),
                }
            }
            published.push(Published {
                position,
                moved,
                more: error.is_none() && (full || refused || unsent > 0),
                interleaved: refused && !stale,
                error,
            });
        }
        published
    }

    /// Where the campaign really stands in the stream: after the subject's last message (its feed id says
    /// which event it carries). A subject with no message left (expired) keeps the feed position.
    async fn resync(
        &self,
        stream: &Stream,
        subject: &str,
        position: &mut Claimed,
    ) -> Result<(), String> {
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(last) => {
                let seq = last
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .and_then(|id| seq_of(id.as_str()))
                    .ok_or_else(|| format!("the last message on {subject} carries no feed id"))?;
                position.relayed_seq = seq;
                position.subject_seq = last.sequence as i64;
                Ok(())
            }
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => {
                position.subject_seq = 0;
                Ok(())
            }
            Err(err) => Err(format!("cannot read the last message on {subject}: {err}")),
        }
    }
}

/// Every `interval`, publishes each lagging campaign's relay lag (events, seconds), and zero for those that
/// caught up since. Every replica does, so any replica's metrics show it, whoever relays.
pub async fn report_lag(store: Store, interval: Duration) {
    let mut lagging: HashSet<String> = HashSet::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let lag = async {
            let mut conn = store.acquire().await?;
            positions::lag(&mut conn).await
        };
        let lag = match lag.await {
            Ok(lag) => lag,
            Err(err) => {
                tracing::warn!(error = %err, "could not read the relay's lag");
                continue;
            }
        };
        let now: HashSet<String> = lag.iter().map(|(campaign, ..)| campaign.clone()).collect();
        for caught_up in lagging.difference(&now) {
            metrics::gauge!(RELAY_LAG_EVENTS, "campaign" => caught_up.clone()).set(0.0);
            metrics::gauge!(RELAY_LAG_SECONDS, "campaign" => caught_up.clone()).set(0.0);
        }
        for (campaign, events, seconds) in lag {
            metrics::gauge!(RELAY_LAG_EVENTS, "campaign" => campaign.clone()).set(events as f64);
            metrics::gauge!(RELAY_LAG_SECONDS, "campaign" => campaign).set(seconds);
        }
        lagging = now;
    }
}

/// Gives up this replica's leases (it is shutting down), telling every replica with the commit, so another
/// relays its campaigns at once: in one transaction, or one campaign's per transaction.
pub async fn release(store: &Store, holder: &str, single_campaign: bool) {
    let released = async {
        let schema = store.schema().await?;
        let held = if single_campaign {
            let mut conn = store.acquire().await?;
            positions::held(&mut conn, holder).await?
        } else {
            Vec::new()
        };
        let lots: Vec<Campaigns> = if single_campaign {
            held.chunks(1).map(Campaigns::Named).collect()
        } else {
            vec![Campaigns::Every]
        };
        for campaigns in lots {
            let mut tx = store.begin().await?;
            let released = positions::release(&mut tx, holder, campaigns).await?;
            let notices: Vec<Notice> = released.iter().map(|c| Notice::LeaseReleased(c)).collect();
            notices::commit_notifying(tx, schema, &notices).await?;
        }
        AppResult::Ok(())
    };
    if let Err(err) = released.await {
        tracing::warn!(error = %err, "could not give up the relay's leases; they pass when they expire");
    }
}
