-- Queue keys from a clock per campaign (`store::rules::advance_queue_clock`): the last arrival, in
-- microseconds, a conversation joining the campaign's waiting queue took. Each takes the transaction's time,
-- or the microsecond after the last if that is later, under the settings row's lock. This replaces the
-- statement's clock and the global sequence `waiting_position`: a distributed PostgreSQL refuses volatile
-- functions in UPDATE statements, and a sequence orders nothing across its nodes.
--
-- Every key made before sits at or before this migration's clock, so the clocks start there and new keys
-- come after them. Upgrading: stop the replicas of earlier versions first (they would still use the sequence).
ALTER TABLE inbox_settings ADD COLUMN queue_clock bigint NOT NULL DEFAULT 0;
UPDATE inbox_settings SET queue_clock = (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
DROP SEQUENCE waiting_position;
