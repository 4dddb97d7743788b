-- What happens to a conversation whose holder can no longer answer it (deactivated, or no access group lets
-- them reply to it any more): RETURN_TO_QUEUE (the default: unassigned, cause HOLDER_INACTIVE or
-- HOLDER_NO_REPLY_ACCESS, and put at the front of the waiting queue) or KEEP. Away and offline holders are
-- `on_unavailable`'s.
ALTER TABLE inbox_settings
    ADD COLUMN on_unreachable_holder text NOT NULL DEFAULT 'RETURN_TO_QUEUE'
        CHECK (on_unreachable_holder IN ('RETURN_TO_QUEUE', 'KEEP'));
