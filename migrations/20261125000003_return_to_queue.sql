-- What happens to an organizer's open conversations when they turn AWAY or OFFLINE: KEEP them, or
-- RETURN_TO_QUEUE (unassigned and put at the front of the waiting queue, for others to take).
ALTER TABLE inbox_settings
    ADD COLUMN on_unavailable text NOT NULL DEFAULT 'KEEP' CHECK (on_unavailable IN ('KEEP', 'RETURN_TO_QUEUE'));

-- Why an automatic change happened, when it was not a trigger (e.g. RETURNED_TO_QUEUE).
ALTER TABLE assignment_events ADD COLUMN cause text;
