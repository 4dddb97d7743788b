//! Routing: among the organizers who may take a conversation, who gets it — round-robin or balanced,
//! within capacity — and, for the preview, why each user would not.

use std::collections::{HashMap, HashSet};

use crate::domain::model::{Availability, Role};

use super::next_organizer;

/// How auto-assignment picks among eligible organizers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RoutingMode {
    /// Round-robin in user-id order (the help article).
    #[default]
    RoundRobin,
    /// Fewest open conversations first; ties round-robin.
    Balanced,
}

/// Where the round-robin continues from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RotationStart {
    /// After the organizer last assigned a conversation by any path (the help article).
    #[default]
    LastAssigned,
    /// After the organizer last auto-assigned one.
    LastAutoAssigned,
}

/// What happens to an organizer's open conversations when they turn away or offline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OnUnavailable {
    /// They keep them.
    #[default]
    Keep,
    /// They are unassigned and put at the front of the waiting queue.
    ReturnToQueue,
}

/// How busy an organizer is: their open conversations and the capacity that applies (0 = unlimited).
/// Outside balanced mode `open` may be counted only up to the capacity: enough to tell "at capacity".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub open: u32,
    pub capacity: u32,
}

impl Load {
    pub fn is_full(self) -> bool {
        self.capacity > 0 && self.open >= self.capacity
    }
}

/// The capacity that applies to an organizer: their own, else the campaign's default (0 = unlimited).
pub fn effective_capacity(own: Option<i32>, default_capacity: i32) -> u32 {
    own.unwrap_or(default_capacity).max(0) as u32
}

/// The routing of one batch: the mode, and the organizers' loads when capacity or balance is in play
/// (`None`: neither is, and loads are not read at all).
#[derive(Debug, Clone, Default)]
pub struct Routing {
    pub mode: RoutingMode,
    pub loads: Option<HashMap<String, Load>>,
    /// Organizers whose shift schedule has them off shift at the decision (`domain::shifts`).
    pub off_shift: HashSet<String>,
}

impl Routing {
    /// Who among `eligible` (sorted by id; active, available, may reply) takes the next conversation:
    /// those at capacity are skipped; round-robin goes to the next after `cursor`, balanced to the least
    /// loaded (ties: the next after `cursor`). Records the new conversation in the winner's load.
    pub fn pick<'a>(&mut self, eligible: &'a [String], cursor: Option<&str>) -> Option<&'a str> {
        let on_shift: Vec<String>;
        let candidates = if self.off_shift.is_empty() {
            eligible
        } else {
            on_shift = eligible
                .iter()
                .filter(|id| !self.off_shift.contains(*id))
                .cloned()
                .collect();
            &on_shift
        };
        let chosen = self.pick_among(candidates, cursor)?;
        eligible.iter().find(|id| *id == chosen).map(String::as_str)
    }

    /// [`Routing::pick`] among organizers on shift.
    fn pick_among<'a>(&mut self, eligible: &'a [String], cursor: Option<&str>) -> Option<&'a str> {
        let Some(loads) = self.loads.as_mut() else {
            return next_organizer(eligible, cursor);
        };
        let load = |id: &String| loads.get(id).copied().unwrap_or_default();
        let with_room: Vec<String> = eligible
            .iter()
            .filter(|id| !load(id).is_full())
            .cloned()
            .collect();
        let candidates = match self.mode {
            RoutingMode::RoundRobin => with_room,
            RoutingMode::Balanced => {
                let least = with_room.iter().map(|id| load(id).open).min();
                with_room
                    .into_iter()
                    .filter(|id| Some(load(id).open) == least)
                    .collect()
            }
        };
        let chosen = next_organizer(&candidates, cursor)?;
        let chosen = eligible.iter().find(|id| *id == chosen)?;
        loads.entry(chosen.clone()).or_default().open += 1;
        Some(chosen.as_str())
    }
}

/// Why auto-assignment would not give a conversation to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    Admin,
    Inactive,
    Away,
    Offline,
    NoReplyAccess,
    AtCapacity,
    /// They let the conversation's current wait for a reply lapse.
    Lapsed,
    /// Their shift schedule has them off shift now.
    OffShift,
}

/// A user as the preview sees them.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub user_id: String,
    pub role: Role,
    pub active: bool,
    pub availability: Availability,
    /// Whether an access group lets them reply to the conversation.
    pub may_reply: bool,
    pub load: Load,
    /// They let the conversation's current wait lapse (`domain::replies::routable`).
    pub lapsed: bool,
    /// Off shift by their schedule: when that changes, as a person reads it ("off shift until Mon 09:00
    /// America/Chicago", `domain::shifts::describe`). `None`: on shift, or no schedule.
    pub off_shift: Option<String>,
}

impl Candidate {
    /// Every reason the user would not be auto-assigned the conversation; empty when eligible.
    pub fn reasons(&self) -> Vec<Ineligible> {
        let mut reasons = Vec::new();
        if self.role == Role::Admin {
            reasons.push(Ineligible::Admin);
        }
        if !self.active {
            reasons.push(Ineligible::Inactive);
        }
        match self.availability {
            Availability::Available => {}
            Availability::Away => reasons.push(Ineligible::Away),
            Availability::Offline => reasons.push(Ineligible::Offline),
        }
        if self.role == Role::Organizer && !self.may_reply {
            reasons.push(Ineligible::NoReplyAccess);
        }
        if self.load.is_full() {
            reasons.push(Ineligible::AtCapacity);
        }
        if self.lapsed {
            reasons.push(Ineligible::Lapsed);
        }
        if self.off_shift.is_some() {
            reasons.push(Ineligible::OffShift);
        }
        reasons
    }

    /// A sentence for a person: why (or that) they would be picked.
    pub fn explanation(&self) -> String {
        let reasons = self.reasons();
        if reasons.is_empty() {
            return "eligible".into();
        }
        let words: Vec<String> = reasons
            .iter()
            .map(|reason| match reason {
                Ineligible::Admin => "admins are never auto-assigned".to_string(),
                Ineligible::Inactive => "inactive".to_string(),
                Ineligible::Away => "away".to_string(),
                Ineligible::Offline => "offline".to_string(),
                Ineligible::NoReplyAccess => "no access group lets them reply to it".to_string(),
                Ineligible::AtCapacity => format!(
                    "at capacity: {} of {} open conversations",
                    self.load.open, self.load.capacity
                ),
                Ineligible::Lapsed => "let this conversation's wait for a reply lapse".to_string(),
                Ineligible::OffShift => self.off_shift.clone().unwrap_or_default(),
            })
            .collect();
        words.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn loads(entries: &[(&str, u32, u32)]) -> Option<HashMap<String, Load>> {
        Some(
            entries
                .iter()
                .map(|(id, open, capacity)| {
                    (
                        id.to_string(),
                        Load {
                            open: *open,
                            capacity: *capacity,
                        },
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn without_loads_it_is_the_plain_round_robin() {
        let mut routing = Routing::default();
        let eligible = ids(&["a", "b", "c"]);
        assert_eq!(routing.pick(&eligible, Some("a")), Some("b"));
        assert_eq!(routing.pick(&eligible, Some("c")), Some("a"));
    }

    #[test]
    fn round_robin_skips_organizers_at_capacity_and_counts_what_it_gives() {
        let mut routing = Routing {
            mode: RoutingMode::RoundRobin,
            loads: loads(&[("a", 2, 2), ("b", 0, 1), ("c", 5, 0)]),
            ..Routing::default()
        };
        let eligible = ids(&["a", "b", "c"]);
        assert_eq!(routing.pick(&eligible, None), Some("b"), "a is full");
        assert_eq!(
            routing.pick(&eligible, Some("b")),
            Some("c"),
            "c has no limit"
        );
        assert_eq!(
            routing.pick(&eligible, Some("c")),
            Some("c"),
            "b is full now"
        );
        let mut full = Routing {
            mode: RoutingMode::RoundRobin,
            loads: loads(&[("a", 1, 1)]),
            ..Routing::default()
        };
        assert_eq!(full.pick(&ids(&["a"]), None), None);
    }

    #[test]
    fn balanced_takes_the_least_loaded_and_breaks_ties_round_robin() {
        let mut routing = Routing {
            mode: RoutingMode::Balanced,
            loads: loads(&[("a", 3, 0), ("b", 1, 0), ("c", 1, 0)]),
            ..Routing::default()
        };
        let eligible = ids(&["a", "b", "c"]);
        assert_eq!(routing.pick(&eligible, Some("b")), Some("c"));
        assert_eq!(routing.pick(&eligible, Some("c")), Some("b"));
        // Now a 3, b 2, c 2: the tie after b goes to c.
        assert_eq!(routing.pick(&eligible, Some("b")), Some("c"));
        assert_eq!(routing.pick(&eligible, Some("c")), Some("b"));
        // All at 3: round-robin after b.
        assert_eq!(routing.pick(&eligible, Some("b")), Some("c"));
    }

    #[test]
    fn capacity_zero_is_unlimited_and_the_organizers_own_wins() {
        assert_eq!(effective_capacity(None, 0), 0);
        assert_eq!(effective_capacity(None, 5), 5);
        assert_eq!(effective_capacity(Some(2), 5), 2);
        assert_eq!(effective_capacity(Some(0), 5), 0);
        assert!(
            !Load {
                open: 100,
                capacity: 0
            }
            .is_full()
        );
        assert!(
            Load {
                open: 5,
                capacity: 5
            }
            .is_full()
        );
    }

    #[test]
    fn the_preview_names_every_reason() {
        let mut user = Candidate {
            user_id: "o1".into(),
            role: Role::Organizer,
            active: true,
            availability: Availability::Available,
            may_reply: true,
            load: Load {
                open: 1,
                capacity: 5,
            },
            lapsed: false,
            off_shift: None,
        };
        assert!(user.reasons().is_empty());
        assert_eq!(user.explanation(), "eligible");
        user.availability = Availability::Away;
        user.may_reply = false;
        user.load = Load {
            open: 5,
            capacity: 5,
        };
        assert_eq!(
            user.reasons(),
            vec![
                Ineligible::Away,
                Ineligible::NoReplyAccess,
                Ineligible::AtCapacity
            ]
        );
        assert!(user.explanation().contains("5 of 5"));
        user.availability = Availability::Offline;
        user.active = false;
        assert_eq!(
            user.reasons()[..2],
            [Ineligible::Inactive, Ineligible::Offline]
        );
        let admin = Candidate {
            role: Role::Admin,
            may_reply: false,
            ..user.clone()
        };
        assert_eq!(admin.reasons()[0], Ineligible::Admin);
        assert!(!admin.reasons().contains(&Ineligible::NoReplyAccess));
        let lapsed = Candidate {
            lapsed: true,
            ..user.clone()
        };
        assert_eq!(lapsed.reasons().last(), Some(&Ineligible::Lapsed));
        assert!(lapsed.explanation().ends_with("lapse"));
        let off = Candidate {
            off_shift: Some("off shift until Mon 09:00 America/Chicago".into()),
            ..user
        };
        assert_eq!(off.reasons().last(), Some(&Ineligible::OffShift));
        assert!(
            off.explanation()
                .ends_with("off shift until Mon 09:00 America/Chicago")
        );
    }

    #[test]
    fn organizers_off_shift_are_passed_over_and_keep_their_place_in_the_rotation() {
        let eligible = ids(&["a", "b", "c"]);
        let mut routing = Routing {
            off_shift: ["b".to_string()].into(),
            ..Routing::default()
        };
        assert_eq!(routing.pick(&eligible, Some("a")), Some("c"));
        assert_eq!(routing.pick(&eligible, Some("c")), Some("a"));
        let mut balanced = Routing {
            mode: RoutingMode::Balanced,
            loads: loads(&[("a", 3, 0), ("b", 0, 0), ("c", 2, 0)]),
            off_shift: ["b".to_string()].into(),
        };
        assert_eq!(
            balanced.pick(&eligible, None),
            Some("c"),
            "b is least loaded but off shift"
        );
        let mut nobody = Routing {
            off_shift: ["a".to_string(), "b".to_string(), "c".to_string()].into(),
            ..Routing::default()
        };
        assert_eq!(nobody.pick(&eligible, None), None);
    }
}
