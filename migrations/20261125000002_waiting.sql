-- Conversations that found no eligible organizer wait here, drained oldest first (smallest position) the
-- moment someone can take them. Positions come from one sequence; conversations returned by an organizer
-- who went away take negative positions: the front.
CREATE SEQUENCE waiting_position;

CREATE TABLE waiting_conversations (
    campaign_id     text        NOT NULL,
    conversation_id text        NOT NULL,
    position        bigint      NOT NULL,
    waiting_since   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, conversation_id),
    FOREIGN KEY (campaign_id, conversation_id) REFERENCES conversations (campaign_id, conversation_id)
);

CREATE INDEX waiting_conversations_in_order ON waiting_conversations (campaign_id, position);

-- Whether the campaign may have waiting conversations: set by the batch that queues one (under the
-- auto-assign lock), cleared by the drain that empties the queue. Assignments and resolves by other paths
-- only ever remove waiting conversations, so `false` means the queue is empty.
ALTER TABLE inbox_settings ADD COLUMN has_waiting boolean NOT NULL DEFAULT false;

ALTER TABLE auto_assign_triggers
    DROP CONSTRAINT auto_assign_triggers_outcome_check,
    ADD CONSTRAINT auto_assign_triggers_outcome_check
        CHECK (outcome IN ('ASSIGNED', 'ALREADY_ASSIGNED', 'NO_ELIGIBLE_ORGANIZER', 'DISABLED', 'QUEUED'));

-- Resolving and reopening are history too.
ALTER TABLE assignment_events
    DROP CONSTRAINT assignment_events_action_check,
    ADD CONSTRAINT assignment_events_action_check
        CHECK (action IN ('ASSIGN', 'UNASSIGN', 'REASSIGN', 'AVAILABILITY_CHANGED', 'RESOLVE', 'REOPEN'));
