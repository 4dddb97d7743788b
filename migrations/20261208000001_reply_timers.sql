-- Silence timers: a holder who has not replied in time loses the conversation (or is only flagged).
-- Nothing here is a timer row: a conversation's reply is due `reply_within_seconds` after the later of
-- the member's first unanswered message and its assignment (`store::rules::REPLY_DUE`), so every path
-- that assigns, unassigns, resolves or replies moves the due time in its own transaction, and any replica
-- finds what is due through one index.

-- Per campaign: reply within this many seconds (NULL: no timer, the default); what happens when the holder
-- has not (REASSIGN: through the front of the waiting queue to the next eligible organizer who has not let
-- it lapse, at most `max_overdue_reassignments` times per wait, then it waits untimed; NOTIFY: an event only).
ALTER TABLE inbox_settings
    ADD COLUMN reply_within_seconds integer CHECK (reply_within_seconds > 0),
    ADD COLUMN on_reply_overdue text NOT NULL DEFAULT 'REASSIGN' CHECK (on_reply_overdue IN ('REASSIGN', 'NOTIFY')),
    ADD COLUMN max_overdue_reassignments integer NOT NULL DEFAULT 2
        CHECK (max_overdue_reassignments BETWEEN 0 AND 100);

-- Per conversation: since when the member has waited for a reply (their first message since the last
-- reply; NULL: nothing unanswered), and who let this wait lapse (cleared by a reply).
ALTER TABLE conversations
    ADD COLUMN awaiting_reply_since timestamptz,
    ADD COLUMN lapsed_by text[] NOT NULL DEFAULT '{}';

-- The timers that can fire: open, held, unanswered conversations whose holder has not let this wait lapse,
-- by the time their wait began for the holder.
CREATE INDEX conversations_reply_timers ON conversations (campaign_id, (greatest(awaiting_reply_since, assigned_at)))
    WHERE awaiting_reply_since IS NOT NULL AND assignee_id IS NOT NULL AND status = 'OPEN'
      AND NOT (assignee_id = ANY (lapsed_by));

-- Replies the messaging service reported, so a retried report has the effect of one.
CREATE TABLE replies (
    campaign_id     text        NOT NULL,
    message_id      text        NOT NULL,
    conversation_id text        NOT NULL,
    sender_id       text        NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, message_id),
    FOREIGN KEY (campaign_id, conversation_id) REFERENCES conversations (campaign_id, conversation_id)
);
CREATE INDEX replies_by_age ON replies (sent_at);

-- A holder who let a reply lapse, under NOTIFY, is recorded by an event of its own.
ALTER TABLE assignment_events
    DROP CONSTRAINT assignment_events_action_check,
    ADD CONSTRAINT assignment_events_action_check
        CHECK (action IN ('ASSIGN', 'UNASSIGN', 'REASSIGN', 'AVAILABILITY_CHANGED', 'RESOLVE', 'REOPEN',
                          'QUEUED', 'LEFT_QUEUE', 'REPLY_OVERDUE'));
