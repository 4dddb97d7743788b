-- The request id of the call that made each change (x-request-id, or generated), to tie history to logs.
ALTER TABLE assignment_events ADD COLUMN request_id text;
