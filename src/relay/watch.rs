//! What a replica's relay remembers between claims, so that under load it claims only the campaigns it
//! heard of rather than reading every campaign's lease: those with events another replica holds, to look at
//! again when that lease may have lapsed (its holder may have died), and which replica relays, so that it
//! leaves new campaigns to that one.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::store::relay::Claims;

/// A look again a little after a lease's end, so the database's clock has passed it too.
const AFTER_LAPSE: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
pub struct Watch {
    /// Campaigns with events this replica does not hold, and when to look at them again.
    again_at: HashMap<String, Instant>,
    /// The replica relaying, other than this one, and until when it is known to (its lease's end).
    relaying: Option<(String, Instant)>,
}

impl Watch {
    /// The watched campaigns due for another look at `now` (they are no longer watched: the look decides).
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let due: Vec<String> = self
            .again_at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &due {
            self.again_at.remove(id);
        }
        due
    }

    /// The replica known to relay, other than this one, while its lease is known to run.
    pub fn relaying(&self, now: Instant) -> Option<&str> {
        self.relaying
            .as_ref()
            .filter(|(_, until)| now < *until)
            .map(|(holder, _)| holder.as_str())
    }

    /// Takes in what a claim by `holder` found at `now`. `named`: the campaigns it looked at by name
    /// (those it found nothing for have nothing to relay); `None` for a look at every campaign, which
    /// finds a limited number.
    pub fn learn(
        &mut self,
        holder: &str,
        named: Option<&[String]>,
        claims: &Claims,
        now: Instant,
        lease: Duration,
    ) {
        self.relaying = match claims.relaying.as_deref() {
            None => None,
            Some(relaying) if relaying == holder => None,
            Some(relaying) => {
                let seen_until = claims
                    .theirs
                    .iter()
                    .filter(|t| t.holder.as_deref() == Some(relaying))
                    .filter_map(|t| t.lapses_in)
                    .max()
                    .map(|left| now + left);
                let known_until = self
                    .relaying
                    .take()
                    .filter(|(known, _)| known == relaying)
                    .map(|(_, until)| until);
                // A replica seen relaying only through campaigns with no events is given half a lease.
                let until = seen_until.max(known_until).unwrap_or(now + lease / 2);
                Some((relaying.to_owned(), until))
            }
        };
        if let Some(named) = named {
            for id in named {
                self.again_at.remove(id);
            }
        }
        for ours in &claims.ours {
            self.again_at.remove(&ours.campaign_id);
        }
        let left_to_relaying = self
            .relaying
            .as_ref()
            .map_or(now + lease / 2, |(_, until)| *until);
        for theirs in &claims.theirs {
            let at = match theirs.lapses_in {
                Some(left) => now + left + AFTER_LAPSE,
                None => left_to_relaying + AFTER_LAPSE,
            };
            self.again_at.insert(theirs.campaign_id.clone(), at);
        }
    }

    /// How many campaigns are watched.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.again_at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::relay::{Claimed, Theirs};

    const LEASE: Duration = Duration::from_secs(10);

    fn theirs(campaign: &str, holder: Option<&str>, left_ms: Option<u64>) -> Theirs {
        Theirs {
            campaign_id: campaign.to_owned(),
            holder: holder.map(str::to_owned),
            lapses_in: left_ms.map(Duration::from_millis),
        }
    }

    fn ours(campaign: &str) -> Claimed {
        Claimed {
            campaign_id: campaign.to_owned(),
            relayed_seq: 1,
            subject_seq: 1,
        }
    }

    fn names(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    #[test]
    fn a_campaign_another_replica_holds_is_looked_at_again_once_its_lease_may_have_lapsed() {
        let mut watch = Watch::default();
        let now = Instant::now();
        let claims = Claims {
            theirs: vec![theirs("c1", Some("b"), Some(3_000))],
            relaying: Some("b".to_owned()),
            ..Claims::default()
        };
        watch.learn("c", Some(&names(&["c1", "c2"])), &claims, now, LEASE);
        assert!(watch.due(now + Duration::from_millis(2_999)).is_empty());
        assert_eq!(watch.due(now + Duration::from_millis(3_100)), ["c1"]);
        assert!(
            watch.due(now + Duration::from_secs(60)).is_empty(),
            "looked at once"
        );
        assert_eq!(watch.relaying(now), Some("b"));
        assert_eq!(
            watch.relaying(now + Duration::from_secs(3)),
            None,
            "known only while its lease runs"
        );
    }

    #[test]
    fn campaigns_left_to_the_replica_relaying_are_looked_at_again_when_it_is_no_longer_known_to() {
        let mut watch = Watch::default();
        let now = Instant::now();
        let claims = Claims {
            theirs: vec![
                theirs("c1", Some("a"), Some(4_000)),
                theirs("c2", None, None),
            ],
            relaying: Some("a".to_owned()),
            ..Claims::default()
        };
        watch.learn("b", Some(&names(&["c1", "c2"])), &claims, now, LEASE);
        assert!(watch.due(now + Duration::from_millis(3_999)).is_empty());
        let mut due = watch.due(now + Duration::from_millis(4_100));
        due.sort();
        assert_eq!(due, ["c1", "c2"]);
    }

    #[test]
    fn what_a_claim_takes_or_finds_nothing_for_is_no_longer_watched() {
        let mut watch = Watch::default();
        let now = Instant::now();
        let held = Claims {
            theirs: vec![
                theirs("c1", Some("b"), Some(1_000)),
                theirs("c2", Some("b"), Some(1_000)),
            ],
            relaying: Some("b".to_owned()),
            ..Claims::default()
        };
        watch.learn("c", Some(&names(&["c1", "c2"])), &held, now, LEASE);
        assert_eq!(watch.len(), 2);
        let lapsed = Claims {
            ours: vec![ours("c1")],
            ..Claims::default()
        };
        watch.learn("c", Some(&names(&["c1", "c2"])), &lapsed, now, LEASE);
        assert_eq!(watch.len(), 0, "c1 taken, c2 relayed meanwhile");
        assert_eq!(watch.relaying(now), None, "nobody else relays");
    }

    #[test]
    fn a_look_at_every_campaign_forgets_nothing_it_did_not_find() {
        let mut watch = Watch::default();
        let now = Instant::now();
        let held = Claims {
            theirs: vec![theirs("c1", Some("b"), Some(1_000))],
            relaying: Some("b".to_owned()),
            ..Claims::default()
        };
        watch.learn("c", None, &held, now, LEASE);
        watch.learn("c", None, &Claims::default(), now, LEASE);
        assert_eq!(watch.len(), 1, "a full claim sees a limited number");
    }

    #[test]
    fn the_replica_relaying_stays_known_while_any_of_its_leases_is_seen_to_run() {
        let mut watch = Watch::default();
        let now = Instant::now();
        let first = Claims {
            theirs: vec![theirs("c1", Some("a"), Some(5_000))],
            relaying: Some("a".to_owned()),
            ..Claims::default()
        };
        watch.learn("b", Some(&names(&["c1"])), &first, now, LEASE);
        // A later claim names "a" only because this replica passed it on: it keeps its known end.
        let later = now + Duration::from_secs(1);
        let hinted = Claims {
            relaying: Some("a".to_owned()),
            ..Claims::default()
        };
        watch.learn("b", Some(&names(&["c9"])), &hinted, later, LEASE);
        assert_eq!(
            watch.relaying(now + Duration::from_millis(4_900)),
            Some("a")
        );
        assert_eq!(watch.relaying(now + Duration::from_millis(5_100)), None);
        // Itself relaying: nobody else to leave campaigns to.
        let itself = Claims {
            relaying: Some("b".to_owned()),
            ..Claims::default()
        };
        watch.learn("b", None, &itself, later, LEASE);
        assert_eq!(watch.relaying(later), None);
    }
}
