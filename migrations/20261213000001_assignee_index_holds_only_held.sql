-- Conversations by assignee hold only conversations someone holds. Every lookup of one conversation by its key
-- (the foreign-key checks of events, queue entries and replies among them, which no statement of the
-- service can shape) could take the old index with the campaign as its only bound when a kept plan sees a
-- campaign as a handful of rows (statistics taken while campaigns were small): an index scan of the whole
-- campaign per lookup, about a thousand pages for 100,000 conversations. Partial, it serves lookups by
-- assignee only (`assignee_id = x` implies the predicate), and a lookup by key has the primary key alone.
-- The rebuild holds off writes to conversations while it runs (seconds per million conversations).
DROP INDEX conversations_by_assignee;
CREATE INDEX conversations_by_assignee ON conversations (campaign_id, assignee_id, conversation_id)
    WHERE assignee_id IS NOT NULL;
