//! This replica's listener: one LISTEN connection of its own (calls need the pool's), hearing what every
//! replica's commits announce (`store::notices`): a campaign's feed head moved (its watchers here are
//! fanned the new events; its reply timers may have started), its timed work changed (the agendas read
//! it again), or its relay lease was given up (the relay claims it).

use std::time::Duration;

use crate::service::agenda::Agendas;
use crate::service::feed::Feed;
use crate::store::Store;
use crate::store::notices::{self, FEED_CHANNEL, RELAY_CHANNEL, TIMED_WORK_CHANNEL};

/// Listens until the task is dropped, reconnecting after failures.
pub async fn listen(store: Store, feed: Feed, agendas: Agendas) {
    loop {
        if let Err(err) = listen_once(&store, &feed, &agendas).await {
            tracing::warn!(error = %err, "the notification listener failed; reconnecting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen_once(store: &Store, feed: &Feed, agendas: &Agendas) -> Result<(), sqlx::Error> {
    let mut listener = store.listener().await?;
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&mut listener)
        .await?;
    listener
        .listen_all([FEED_CHANNEL, TIMED_WORK_CHANNEL, RELAY_CHANNEL])
        .await?;
    // Whatever was written while nobody listened.
    feed.sweep().await;
    agendas.touch_all();
    loop {
        let notification = listener.recv().await?;
        let Some(campaign_id) = notices::campaign_of(notification.payload(), &schema) else {
            continue;
        };
        match notification.channel() {
            FEED_CHANNEL => {
                feed.fan_out(campaign_id);
                agendas.head_moved(campaign_id);
            }
            TIMED_WORK_CHANNEL => agendas.timed_work_changed(campaign_id),
            RELAY_CHANNEL => agendas.heads_moved.mark(campaign_id),
            _ => {}
        }
    }
}
