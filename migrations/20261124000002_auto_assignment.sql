-- Per-campaign inbox settings, and the round-robin cursor of auto-assignment. The row is the lock that
-- serialises auto-assignment within a campaign (SELECT ... FOR UPDATE); campaigns never share a row.
CREATE TABLE inbox_settings (
    campaign_id           text        PRIMARY KEY,
    auto_assign_enabled   boolean     NOT NULL DEFAULT false,
    -- The organizer most recently auto-assigned a conversation; rotation continues after them in id order.
    -- No foreign key: the cursor may name a user who has since gone, and rotation copes with that.
    last_auto_assignee_id text,
    updated_at            timestamptz NOT NULL DEFAULT now(),
    updated_by            text
);

-- Every auto-assign trigger seen, so a redelivered trigger has the effect of one delivery.
CREATE TABLE auto_assign_triggers (
    campaign_id     text        NOT NULL,
    trigger_id      text        NOT NULL,
    conversation_id text        NOT NULL,
    outcome         text        NOT NULL
                    CHECK (outcome IN ('ASSIGNED', 'ALREADY_ASSIGNED', 'NO_ELIGIBLE_ORGANIZER', 'DISABLED')),
    assignee_id     text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, trigger_id)
);

-- For pruning old trigger records.
CREATE INDEX auto_assign_triggers_by_age ON auto_assign_triggers (received_at);
