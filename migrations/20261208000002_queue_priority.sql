-- Priority in the waiting queue, with aging. A conversation's queue key (`position`, the one order every
-- reader uses: drains, ListWaitingConversations, queue positions) is its effective arrival in microseconds
-- times 1000, plus a tie-breaker: the time it began waiting minus `priority_step_seconds` per priority level
-- (LOW 0, NORMAL 1, HIGH 2, URGENT 3). So within a step, higher priorities go first; beyond it, waiting
-- longer wins: nothing starves (`store::rules::queue_key`). Conversations returned to the front take
-- negative keys, as before. Keys made before this migration (small sequence numbers) stay in order ahead
-- of new ones.
ALTER TABLE inbox_settings
    ADD COLUMN priority_step_seconds integer NOT NULL DEFAULT 600
        CHECK (priority_step_seconds BETWEEN 1 AND 604800);

ALTER TABLE waiting_conversations
    ADD COLUMN priority text NOT NULL DEFAULT 'NORMAL' CHECK (priority IN ('LOW', 'NORMAL', 'HIGH', 'URGENT'));
