-- Routing that knows who is there: availability and capacity per user, routing settings per campaign.

ALTER TABLE users
    ADD COLUMN availability text NOT NULL DEFAULT 'AVAILABLE'
        CHECK (availability IN ('AVAILABLE', 'AWAY', 'OFFLINE')),
    -- An organizer's own limit of OPEN conversations for auto-assignment; NULL: the campaign default.
    ADD COLUMN capacity integer CHECK (capacity >= 0);

ALTER TABLE inbox_settings
    ADD COLUMN default_capacity integer NOT NULL DEFAULT 0 CHECK (default_capacity >= 0),
    ADD COLUMN routing_mode text NOT NULL DEFAULT 'ROUND_ROBIN' CHECK (routing_mode IN ('ROUND_ROBIN', 'BALANCED')),
    ADD COLUMN rotation_start text NOT NULL DEFAULT 'LAST_ASSIGNED'
        CHECK (rotation_start IN ('LAST_ASSIGNED', 'LAST_AUTO_ASSIGNED'));

-- Availability changes are history too: events about a user rather than a conversation.
ALTER TABLE assignment_events
    ALTER COLUMN conversation_id DROP NOT NULL,
    ADD COLUMN user_id text,
    ADD COLUMN availability text CHECK (availability IN ('AVAILABLE', 'AWAY', 'OFFLINE')),
    DROP CONSTRAINT assignment_events_action_check,
    ADD CONSTRAINT assignment_events_action_check
        CHECK (action IN ('ASSIGN', 'UNASSIGN', 'REASSIGN', 'AVAILABILITY_CHANGED')),
    ADD CONSTRAINT assignment_events_subject_check
        CHECK ((action = 'AVAILABILITY_CHANGED') = (conversation_id IS NULL));

-- Open conversations per assignee, counted for capacity and balanced routing.
CREATE INDEX conversations_open_by_assignee ON conversations (campaign_id, assignee_id)
    WHERE status = 'OPEN' AND assignee_id IS NOT NULL;

-- The last organizer assigned by any path: the newest assignment events of a campaign.
CREATE INDEX assignment_events_assignments ON assignment_events (campaign_id, event_id DESC)
    WHERE action IN ('ASSIGN', 'REASSIGN');
