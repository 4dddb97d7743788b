//! Notifications every replica hears, raised with the commit of the change they announce: NOTIFY commands
//! of their own (payload `schema/campaign`), delivered only if the transaction commits, and to every
//! replica's listener (`service::notices`).
//!
//! They ride on the COMMIT's round trip, touching no table: a distributed PostgreSQL runs a statement on
//! the node holding the rows it touches, and a NOTIFY raised on a worker never reaches the listeners, which
//! are on the coordinator. A NOTIFY command is not planned, so it costs the commit next to nothing
//! (`SELECT pg_notify(…)` would be parsed and planned at every commit).

use super::Tx;
use crate::error::AppResult;

/// The channel of [`Notice::HeadMoved`].
pub const FEED_CHANNEL: &str = "assignment_feed";
/// The channel of [`Notice::TimedWorkChanged`].
pub const TIMED_WORK_CHANNEL: &str = "assignment_timed_work";
/// The channel of [`Notice::LeaseReleased`].
pub const RELAY_CHANNEL: &str = "assignment_relay";

/// What a commit tells every replica about one campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice<'a> {
    /// Its feed head moved: watchers have events to read (and a reply timer may have started with an
    /// assignment).
    HeadMoved(&'a str),
    /// A change no event records may have started or moved its timed work: a wait for a reply, the
    /// reply timers' setting, a shift schedule.
    TimedWorkChanged(&'a str),
    /// A replica shutting down gave up its relay lease: another is to take it now.
    LeaseReleased(&'a str),
}

impl Notice<'_> {
    fn channel(&self) -> &'static str {
        match self {
            Notice::HeadMoved(_) => FEED_CHANNEL,
            Notice::TimedWorkChanged(_) => TIMED_WORK_CHANNEL,
            Notice::LeaseReleased(_) => RELAY_CHANNEL,
        }
    }

    fn campaign_id(&self) -> &str {
        match self {
            Notice::HeadMoved(campaign_id)
            | Notice::TimedWorkChanged(campaign_id)
            | Notice::LeaseReleased(campaign_id) => campaign_id,
        }
    }
}

/// Commits, raising `notices` with the commit (none: a plain commit).
pub fn commit_notifying(
    tx: Tx,
    schema: &str,
    notices: &[Notice<'_>],
) -> impl Future<Output = AppResult<()>> + Send + use<> {
    // Built before the future, which then holds only owned data.
    let notifies: Vec<String> = notices
        .iter()
        .map(|notice| {
            format!(
                "NOTIFY {}, {}",
                notice.channel(),
                literal(&format!("{schema}/{}", notice.campaign_id()))
            )
        })
        .collect();
    async move {
        if notifies.is_empty() {
            return Ok(tx.commit().await?);
        }
        Ok(tx.commit_after(notifies.join("; ")).await?)
    }
}

/// A notification's campaign, if it was raised in `schema` (replicas of other schemas share the channel).
pub fn campaign_of<'a>(payload: &'a str, schema: &str) -> Option<&'a str> {
    let (from, campaign_id) = payload.split_once('/')?;
    (from == schema).then_some(campaign_id)
}

/// `text` as an SQL string literal, whatever `standard_conforming_strings` says: an escape string with its
/// backslashes and quotes escaped.
fn literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_its_campaign_only_in_its_own_schema() {
        assert_eq!(campaign_of("s1/c/1", "s1"), Some("c/1"));
        assert_eq!(campaign_of("s2/c", "s1"), None);
        assert_eq!(campaign_of("no-slash", "s1"), None);
    }

    #[test]
    fn a_literal_keeps_quotes_and_backslashes() {
        assert_eq!(literal(r"a'b\c"), r"E'a\'b\\c'");
    }
}
