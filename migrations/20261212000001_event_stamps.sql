-- The order of a campaign's events not numbered yet, taken from the campaign's own rows instead of the
-- global sequence behind `event_id` (a distributed PostgreSQL draws a sequence's values per node, so their
-- order says nothing about which writer came first). See docs/scaling.md, "The order of events not numbered
-- yet".
--
-- `clock` on a conversation or a user: the stamp of the newest event about it. `event_clock` on a campaign's
-- settings: the newest stamp given under the campaign's lock (its queue's events, its shift events). An
-- event's `stamp` is one more than the clocks of what it is about, read under that row's lock, and the
-- writer moves those clocks to it; so a writer that waited for another's row lock stamps its events later.
-- The sequencer numbers events by (stamp, event_id): equal stamps share no row, so their order is free.
-- Events numbered by the writer itself (an auto-assign batch) carry no stamp.
--
-- Upgrading: stop the replicas of earlier versions first (their events would carry no stamp, which the
-- check below refuses). Events not numbered when this runs all take stamp 0: they keep their event-id order
-- and come before every newer one, as before.
ALTER TABLE conversations ADD COLUMN clock bigint NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN clock bigint NOT NULL DEFAULT 0;
ALTER TABLE inbox_settings ADD COLUMN event_clock bigint NOT NULL DEFAULT 0;
ALTER TABLE assignment_events ADD COLUMN stamp bigint;
UPDATE assignment_events SET stamp = 0 WHERE seq IS NULL;
-- Every event the sequencer numbers has its stamp.
ALTER TABLE assignment_events ADD CONSTRAINT assignment_events_stamped CHECK (seq IS NOT NULL OR stamp IS NOT NULL);
-- The sequencer's and the rotation's way to a campaign's unnumbered events, in their order.
DROP INDEX assignment_events_unsequenced;
CREATE INDEX assignment_events_unsequenced ON assignment_events (campaign_id, stamp, event_id) WHERE seq IS NULL;
