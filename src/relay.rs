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

use std::collections::HashSet;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self, Context};
use futures_util::StreamExt;
use prost::Message;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::domain::opaque::CampaignIds;
use crate::domain::paging::PageScope;
use crate::grpc::convert;
use crate::observability::{RELAY_LAG_EVENTS, RELAY_LAG_SECONDS, RELAY_PUBLISHED, RELAY_REJECTED};
use crate::service::feed::{Delivered, Place};
use crate::store::Store;
use crate::store::feed::{self, EventFilter};
use crate::store::relay::{self as positions, Claimed};

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
/// Campaigns a replica relays side by side.
const CAMPAIGNS_AT_ONCE: usize = 4;
/// Events read from the feed at a time.
const READ_LIMIT: i64 = 256;

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
}

/// One replica's relay: its lease holder id, its connection and the stream.
pub struct Relay {
    store: Store,
    config: RelayConfig,
    holder: String,
    context: Context,
    stream: Option<Stream>,
}

impl Relay {
    /// Connects (in the background if NATS is not there yet: the service serves meanwhile).
    pub async fn connect(
        store: Store,
        config: RelayConfig,
        holder: String,
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
        })
    }

    /// Relays until the task is dropped; a pass that fails (NATS or PostgreSQL away) is logged, reported
    /// by health, and tried again at the next tick.
    pub async fn run(mut self, health: HealthReporter) {
        health
            .set_service_status(HEALTH_NAME, ServingStatus::NotServing)
            .await;
        // Exported from the start, so a dashboard shows zero rather than nothing.
        metrics::counter!(RELAY_PUBLISHED).increment(0);
        metrics::counter!(RELAY_REJECTED).increment(0);
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut healthy = None;
        loop {
            ticker.tick().await;
            let result = self.pass().await;
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

    /// One pass: the campaigns with events to relay whose lease this replica takes, each relayed up to
    /// its head, side by side.
    async fn pass(&mut self) -> Result<(), String> {
        let stream = self.stream().await?;
        let claimed = {
            let mut conn = self.store.acquire().await.map_err(|e| e.to_string())?;
            positions::claim(
                &mut conn,
                &self.holder,
                self.config.lease,
                CAMPAIGNS_PER_PASS,
            )
            .await
            .map_err(|e| e.to_string())?
        };
        // A few campaigns at once (each one's messages one after another: each expects the previous one's
        // stream sequence); each holds at most one pooled connection at a time.
        let relayed: Vec<Result<(), String>> = futures_util::stream::iter(claimed)
            .map(|position| self.relay_campaign(&stream, position))
            .buffer_unordered(CAMPAIGNS_AT_ONCE)
            .collect()
            .await;
        relayed.into_iter().collect()
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

    /// Publishes the campaign's events after its position, in feed order, each acknowledged before the
    /// next; the position moves after each read's worth. Stops when the feed has no more, or when another
    /// replica took the campaign.
    async fn relay_campaign(&self, stream: &Stream, mut position: Claimed) -> Result<(), String> {
        let campaign_id = position.campaign_id.clone();
        let subject = subject::of(&self.config.subject_prefix, &campaign_id);
        let secret = self
            .store
            .opaque_secret()
            .await
            .map_err(|e| e.to_string())?;
        let ids = CampaignIds::new(secret, &campaign_id);
        let cursors = PageScope::feed(&campaign_id);
        loop {
            let events = {
                let mut conn = self.store.acquire().await.map_err(|e| e.to_string())?;
                feed::after(
                    &mut conn,
                    &campaign_id,
                    position.relayed_seq,
                    &EventFilter::default(),
                    READ_LIMIT,
                )
                .await
                .map_err(|e| e.to_string())?
            };
            if events.is_empty() {
                return Ok(());
            }
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
                headers.insert(
                    async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                    position.subject_seq.to_string().as_str(),
                );
                headers.insert("Content-Type", CONTENT_TYPE);
                headers.insert(KIND_HEADER, message.action().as_str_name());
                let published = self
                    .context
                    .publish_with_headers(subject.clone(), headers, message.encode_to_vec().into())
                    .await
                    .map_err(|e| format!("cannot publish to {subject}: {e}"))?
                    .await;
                match published {
                    Ok(ack) => {
                        metrics::counter!(RELAY_PUBLISHED).increment(1);
                        position.relayed_seq = seq;
                        position.subject_seq = ack.sequence as i64;
                    }
                    Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => {
                        // The subject moved past what this replica knew: go on after its last message.
                        metrics::counter!(RELAY_REJECTED).increment(1);
                        self.resync(stream, &subject, &mut position).await?;
                        break;
                    }
                    Err(err) => return Err(format!("JetStream refused {subject}: {err}")),
                }
            }
            let mut conn = self.store.acquire().await.map_err(|e| e.to_string())?;
            let held = positions::advance(&mut conn, &self.holder, &position, self.config.lease)
                .await
                .map_err(|e| e.to_string())?;
            if !held {
                return Ok(());
            }
        }
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

/// Gives up this replica's leases (it is shutting down), so another replica relays its campaigns at once.
pub async fn release(store: &Store, holder: &str) {
    let released = async {
        let mut conn = store.acquire().await?;
        positions::release(&mut conn, holder).await
    };
    if let Err(err) = released.await {
        tracing::warn!(error = %err, "could not give up the relay's leases; they pass when they expire");
    }
}
