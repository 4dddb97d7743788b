-- Organizer loads without triggers: every statement that changes a conversation's assignee or status now
-- appends its own net load changes to organizer_load_changes (`store::rules::record_load_changes`). A
-- trigger on a distributed table fires per shard on a worker, needs `citus.enable_unsafe_triggers`, and
-- transition tables there are untested (docs/scaling.md).
--
-- Upgrading: stop the replicas of earlier versions before a replica of this one starts. Their statements
-- relied on the triggers, so once these are gone their changes would no longer reach the loads.
DROP TRIGGER conversations_open_inserted ON conversations;
DROP TRIGGER conversations_open_updated ON conversations;
DROP TRIGGER conversations_open_deleted ON conversations;
DROP FUNCTION record_open_conversation_changes();
