-- The organizer assigned last by any path is the last one in the feed's order (`store::feed::last_assigned`),
-- so that replaying the feed reproduces every rotation: numbered assignment events, by number. Events not
-- numbered yet are found through `assignment_events_unsequenced`.
CREATE INDEX assignment_events_assignments_in_feed ON assignment_events (campaign_id, seq)
    WHERE action IN ('ASSIGN', 'REASSIGN') AND seq IS NOT NULL;

-- Replaced: it ordered assignments by event id, which is not the order a campaign's events are numbered in.
DROP INDEX assignment_events_assignments;
