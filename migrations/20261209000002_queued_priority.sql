-- A QUEUED event of a trigger's conversation carries the priority it waits with, so the feed has what
-- orders the queue (with the event's time and the campaign's priority_step_seconds).
ALTER TABLE assignment_events
    ADD COLUMN priority text CHECK (priority IN ('LOW', 'NORMAL', 'HIGH', 'URGENT'));
