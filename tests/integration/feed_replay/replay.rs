//! The routing rules (docs/routing.md), replayed over the feed from the campaign's start: every organizer
//! AVAILABLE and on shift (no schedule), nothing open, an empty queue and no cursor.

use std::collections::{BTreeMap, HashSet, VecDeque};

use assignment_service::pb;
use pb::AssignmentAction as Action;

/// In byte order, the round robin's order. All are active and may reply to every conversation.
pub const ORGANIZERS: [&str; 5] = ["org-a", "org-b", "org-c", "org-d", "org-e"];
/// The campaigns' `default_capacity`; org-c has its own, [`ORG_C_CAPACITY`].
pub const DEFAULT_CAPACITY: u32 = 2;
pub const ORG_C_CAPACITY: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub open: bool,
    pub assignee: Option<String>,
}

pub struct Replay {
    balanced: bool,
    pub conversations: BTreeMap<String, Conversation>,
    /// Organizers not AVAILABLE.
    pub away: HashSet<String>,
    /// Organizers whose shift the feed last said ended.
    pub off_shift: HashSet<String>,
    /// Waiting conversations, next to drain first.
    pub queue: VecDeque<String>,
    /// ROTATION_START_LAST_ASSIGNED: the organizer of the last ASSIGN or REASSIGN, by any path.
    cursor: Option<String>,
    /// The conversation an AUTO LEFT_QUEUE just took out of the queue; its ASSIGN follows.
    drained: Option<String>,
    auto_assigned: HashSet<String>,
    pub auto_assignments: usize,
    /// SHIFT_STARTED and SHIFT_ENDED events.
    pub shift_changes: usize,
    pub deviations: Vec<String>,
}

impl Replay {
    pub fn new(balanced: bool) -> Self {
        Self {
            balanced,
            conversations: BTreeMap::new(),
            away: HashSet::new(),
            off_shift: HashSet::new(),
            queue: VecDeque::new(),
            cursor: None,
            drained: None,
            auto_assigned: HashSet::new(),
            auto_assignments: 0,
            shift_changes: 0,
            deviations: Vec::new(),
        }
    }

    fn capacity(organizer: &str) -> u32 {
        if organizer == "org-c" {
            ORG_C_CAPACITY
        } else {
            DEFAULT_CAPACITY
        }
    }

    /// Open conversations held: a resolved one does not count, a reopened one counts again (even
    /// past capacity: a reopen is never refused).
    pub fn open(&self, organizer: &str) -> u32 {
        let held = |c: &&Conversation| c.open && c.assignee.as_deref() == Some(organizer);
        self.conversations.values().filter(held).count() as u32
    }

    fn has_room(&self, organizer: &str) -> bool {
        !self.away.contains(organizer)
            && !self.off_shift.contains(organizer)
            && self.open(organizer) < Self::capacity(organizer)
    }

    /// Who the rule gives the next conversation: among AVAILABLE organizers with room (balanced: those
    /// of them with the fewest open), the first after the cursor in byte order, wrapping around.
    fn pick(&self) -> Option<&'static str> {
        let mut candidates: Vec<&'static str> = ORGANIZERS
            .into_iter()
            .filter(|o| self.has_room(o))
            .collect();
        if self.balanced {
            let least = candidates.iter().map(|o| self.open(o)).min();
            candidates.retain(|o| Some(self.open(o)) == least);
        }
        let after = self
            .cursor
            .as_deref()
            .and_then(|c| candidates.iter().find(|o| **o > c));
        after.or(candidates.first()).copied()
    }

    fn loads(&self) -> String {
        let load = |o: &&str| {
            let away = if self.away.contains(*o) { " away" } else { "" };
            let off = if self.off_shift.contains(*o) {
                " off shift"
            } else {
                ""
            };
            format!("{o} {}/{}{away}{off}", self.open(o), Self::capacity(o))
        };
        ORGANIZERS.iter().map(load).collect::<Vec<_>>().join(", ")
    }

    fn deviate(&mut self, seq: usize, event: &pb::AssignmentEvent, what: String) {
        let (id, action) = (&event.conversation_id, event.action().as_str_name());
        let message = format!(
            "event {seq} ({action} {id}): {what}; cursor {:?}; loads {}",
            self.cursor,
            self.loads()
        );
        self.deviations.push(message);
    }

    /// Applies the event at `seq` (1 = the feed's first), first checking an automatic decision against
    /// the rule on the state before it.
    pub fn apply(&mut self, seq: usize, event: &pb::AssignmentEvent) {
        let id = event.conversation_id.clone();
        let auto = event.source() == pb::AssignmentSource::Auto;
        let to = event.to_user_id.clone();
        // A trigger creates its conversation open and unassigned in the batch that decides it.
        let fresh = Conversation {
            open: true,
            assignee: None,
        };
        match event.action() {
            Action::AvailabilityChanged => {
                if event.availability() == pb::Availability::Available {
                    self.away.remove(&event.user_id);
                } else {
                    self.away.insert(event.user_id.clone());
                }
                return;
            }
            Action::ShiftStarted => {
                self.shift_changes += 1;
                self.off_shift.remove(&event.user_id);
                return;
            }
            Action::ShiftEnded => {
                self.shift_changes += 1;
                self.off_shift.insert(event.user_id.clone());
                return;
            }
            Action::Assign if auto => self.check_auto_assign(seq, event),
            Action::Queued if auto && event.cause.is_empty() => {
                if let Some(next) = self.pick() {
                    self.deviate(seq, event, format!("queued while {next} could take it"));
                }
            }
            Action::LeftQueue if auto && self.queue.front() != Some(&id) => {
                let head = self.queue.front().cloned();
                self.deviate(seq, event, format!("drained ahead of {head:?}"));
            }
            _ => {}
        }
        let conversation = self.conversations.entry(id.clone()).or_insert(fresh);
        match event.action() {
            Action::Assign | Action::Reassign => {
                conversation.assignee = to.clone();
                // Only organizers move the rotation.
                if let Some(to) = to.filter(|to| ORGANIZERS.contains(&to.as_str())) {
                    self.cursor = Some(to);
                }
            }
            Action::Unassign => conversation.assignee = None,
            Action::Resolve => conversation.open = false,
            Action::Reopen => conversation.open = true,
            Action::Queued if event.cause.is_empty() => self.queue.push_back(id),
            Action::Queued => self.queue.push_front(id),
            Action::LeftQueue => {
                self.queue.retain(|waiting| *waiting != id);
                if auto {
                    self.drained = Some(id);
                }
            }
            other => self.deviate(seq, event, format!("unexpected action {other:?}")),
        }
    }

    /// An AUTO ASSIGN: of an open, unassigned conversation never auto-assigned before, taken from the
    /// queue's head or with nothing waiting, to whom the rule picks (who therefore had room).
    fn check_auto_assign(&mut self, seq: usize, event: &pb::AssignmentEvent) {
        self.auto_assignments += 1;
        let id = &event.conversation_id;
        let drained = self.drained.take().as_ref() == Some(id);
        if let Some(held) = self.conversations.get(id).cloned() {
            if !held.open {
                self.deviate(seq, event, "auto-assigned a resolved conversation".into());
            }
            if let Some(holder) = held.assignee {
                self.deviate(seq, event, format!("auto-assigned while {holder} held it"));
            }
        }
        if !self.auto_assigned.insert(id.clone()) {
            self.deviate(seq, event, "auto-assigned twice".into());
        }
        if !drained && !self.queue.is_empty() {
            let waiting = self.queue.len();
            self.deviate(
                seq,
                event,
                format!("jumped the queue ahead of {waiting} waiting"),
            );
        }
        let got = event.to_user_id.as_deref().unwrap_or_default();
        let expected = self.pick();
        if expected != Some(got) {
            let room = if self.has_room(got) {
                ""
            } else {
                " (who had no room)"
            };
            self.deviate(
                seq,
                event,
                format!("expected {expected:?}, got {got}{room}"),
            );
        }
    }
}
