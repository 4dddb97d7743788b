-- The feed: each campaign's events in one gapless order. Writers insert events without a sequence number
-- (so they never wait on each other, and do not NOTIFY: a notifying commit takes a database-wide lock); a
-- sequencer holding the campaign's feed head numbers committed events (in event-id order among those it
-- finds), advances the head, and NOTIFYs the other replicas. A number is visible only once its
-- sequencer committed, and the next sequencer waits for the head, so numbers are dense and a reader that
-- has seen number n has seen every number below it. Everything is keyed by campaign_id.
CREATE TABLE feed_heads (
    campaign_id text   PRIMARY KEY,
    last_seq    bigint NOT NULL DEFAULT 0
);

ALTER TABLE assignment_events ADD COLUMN seq bigint;

-- Entering and leaving the waiting queue are events too.
ALTER TABLE assignment_events
    DROP CONSTRAINT assignment_events_action_check,
    ADD CONSTRAINT assignment_events_action_check
        CHECK (action IN ('ASSIGN', 'UNASSIGN', 'REASSIGN', 'AVAILABILITY_CHANGED', 'RESOLVE', 'REOPEN',
                          'QUEUED', 'LEFT_QUEUE'));

-- Existing history, numbered in event order.
UPDATE assignment_events e SET seq = n.rn
  FROM (SELECT campaign_id, event_id, row_number() OVER (PARTITION BY campaign_id ORDER BY event_id) AS rn
          FROM assignment_events) AS n
 WHERE e.campaign_id = n.campaign_id AND e.event_id = n.event_id;
INSERT INTO feed_heads (campaign_id, last_seq)
SELECT campaign_id, max(seq) FROM assignment_events GROUP BY campaign_id;

CREATE UNIQUE INDEX assignment_events_by_seq ON assignment_events (campaign_id, seq);
CREATE INDEX assignment_events_unsequenced ON assignment_events (campaign_id, event_id) WHERE seq IS NULL;
