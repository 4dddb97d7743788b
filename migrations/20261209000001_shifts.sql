-- Shifts: an organizer may have a weekly schedule, with dated exceptions, in the campaign's time zone.
-- Whether they are on shift is computed when a decision is made (`domain::shifts`); nothing flips a status.
-- An organizer without a schedule is always on shift (their manual availability alone decides).

-- Per campaign: the IANA time zone schedules are read in, and whether any organizer has a schedule (so a
-- batch of a campaign without one reads none).
ALTER TABLE inbox_settings
    ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC',
    ADD COLUMN has_shifts boolean NOT NULL DEFAULT false;

-- One row per organizer with a schedule: the shift state last recorded in the feed (SHIFT_STARTED or
-- SHIFT_ENDED) and when the schedule next changes it (NULL: no change within the search horizon), which
-- the boundary worker of any replica acts on (drain at a start, `on_unavailable` at an end).
CREATE TABLE shift_schedules (
    campaign_id    text        NOT NULL,
    user_id        text        NOT NULL,
    on_shift       boolean     NOT NULL,
    next_change_at timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, user_id),
    FOREIGN KEY (campaign_id, user_id) REFERENCES users (campaign_id, user_id)
);
-- The boundaries due, across campaigns.
CREATE INDEX shift_schedules_due ON shift_schedules (next_change_at) WHERE next_change_at IS NOT NULL;

-- A schedule's windows, in the order they were given (their place names them in error messages): weekly
-- (weekday 1 = Monday … 7 = Sunday, from `starts` to `ends`, the next day when `ends <= starts`), or an
-- exception on a local date: off all day (no times), or worked in this window instead of the weekly ones.
CREATE TABLE shift_windows (
    campaign_id text     NOT NULL,
    user_id     text     NOT NULL,
    place       integer  NOT NULL,
    weekday     smallint CHECK (weekday BETWEEN 1 AND 7),
    on_date     date,
    starts      time,
    ends        time,
    PRIMARY KEY (campaign_id, user_id, place),
    FOREIGN KEY (campaign_id, user_id) REFERENCES shift_schedules (campaign_id, user_id) ON DELETE CASCADE,
    CHECK ((weekday IS NULL) <> (on_date IS NULL)),
    CHECK ((starts IS NULL) = (ends IS NULL)),
    CHECK (weekday IS NULL OR starts IS NOT NULL)
);

-- Shift starts and ends are history, like availability changes (user_id names the organizer).
ALTER TABLE assignment_events
    DROP CONSTRAINT assignment_events_action_check,
    ADD CONSTRAINT assignment_events_action_check
        CHECK (action IN ('ASSIGN', 'UNASSIGN', 'REASSIGN', 'AVAILABILITY_CHANGED', 'RESOLVE', 'REOPEN',
                          'QUEUED', 'LEFT_QUEUE', 'REPLY_OVERDUE', 'SHIFT_STARTED', 'SHIFT_ENDED'));
ALTER TABLE assignment_events
    DROP CONSTRAINT assignment_events_subject_check,
    ADD CONSTRAINT assignment_events_subject_check
        CHECK ((action IN ('AVAILABILITY_CHANGED', 'SHIFT_STARTED', 'SHIFT_ENDED')) = (conversation_id IS NULL));
