//! Priority in the waiting queue, with aging: the queue drains by priority, then by time waited, and each
//! priority level is worth `priority_step_seconds` of waiting. A conversation's place is fixed when it
//! joins: its effective arrival is the time it began waiting minus one step per level, so a higher priority
//! overtakes only what arrived less than a step per level before it, and a LOW conversation is overtaken by
//! nothing that arrives more than three steps after it: nothing starves. (The SQL key built from the
//! offset is `store::rules::queue_key`; every reader orders by that one key.)

/// How many seconds of waiting a priority level is worth, unless the campaign says otherwise (the
/// migration's column default says the same).
pub const DEFAULT_PRIORITY_STEP_SECONDS: i32 = 600;

/// How urgent a conversation waiting in the queue is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

impl Priority {
    /// Its level: LOW 0 to URGENT 3.
    pub fn level(self) -> i64 {
        match self {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
            Priority::Urgent => 3,
        }
    }

    /// How far ahead of its arrival it queues, in microseconds: one step per level.
    pub fn head_start_micros(self, step_seconds: i32) -> i64 {
        self.level() * i64::from(step_seconds) * 1_000_000
    }
}

/// The effective arrival (microseconds) of a conversation that began waiting at `arrived` (microseconds)
/// with `priority`: the smaller, the sooner it is assigned. The Rust form of `store::rules::queue_key`'s
/// order, for the rule's tests and the docs' examples.
pub fn effective_arrival(arrived: i64, priority: Priority, step_seconds: i32) -> i64 {
    arrived - priority.head_start_micros(step_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: i32 = 600;
    const MINUTE: i64 = 60_000_000;

    #[test]
    fn within_a_step_higher_priorities_go_first() {
        let routine = effective_arrival(0, Priority::Normal, STEP);
        let urgent = effective_arrival(5 * MINUTE, Priority::Urgent, STEP);
        assert!(
            urgent < routine,
            "an urgent message overtakes routine ones of the last 20 minutes"
        );
        let high = effective_arrival(MINUTE, Priority::High, STEP);
        assert!(urgent < high && high < routine);
    }

    #[test]
    fn waiting_longer_than_the_steps_between_two_priorities_wins_so_nothing_starves() {
        let low = effective_arrival(0, Priority::Low, STEP);
        // Three steps (30 minutes) later even URGENT comes after the LOW one that has waited since.
        assert!(effective_arrival(31 * MINUTE, Priority::Urgent, STEP) > low);
        assert!(effective_arrival(29 * MINUTE, Priority::Urgent, STEP) < low);
        // A stream of urgent messages overtakes a low one for at most three steps.
        let overtaking = (0..120)
            .map(|minute| effective_arrival(minute * MINUTE, Priority::Urgent, STEP))
            .filter(|key| *key < low)
            .count();
        assert_eq!(overtaking, 30);
    }

    #[test]
    fn the_same_priority_is_first_come_first_served() {
        for priority in [
            Priority::Low,
            Priority::Normal,
            Priority::High,
            Priority::Urgent,
        ] {
            assert!(effective_arrival(1, priority, STEP) > effective_arrival(0, priority, STEP));
        }
    }
}
