-- One manual assignment as the service does it: lock the conversation, update it (adding to the assignee's
-- load, moving its clock), write its event stamped with that clock, commit.
-- Conversations 'pgmanual-0000001'... exist unassigned; each transaction takes the next.
-- Variables: campaign (pgbench -D campaign=...). Run with PGOPTIONS='-c search_path=<schema>'.
\set organizer random(0, 9)
SELECT 'pgmanual-' || lpad(nextval('pgbench_manual_seq')::text, 7, '0') AS id \gset
BEGIN;
SELECT version FROM conversations WHERE campaign_id = :campaign AND conversation_id = :id FOR UPDATE;
WITH assigned AS (
  UPDATE conversations
     SET assignee_id = 'org-' || lpad(:organizer::text, 2, '0'), assigned_at = now(), assigned_by = 'admin',
         version = version + 1, updated_at = now(), clock = clock + 1
   WHERE campaign_id = :campaign AND conversation_id = :id
  RETURNING assignee_id, clock)
INSERT INTO organizer_load_changes (campaign_id, user_id, delta) SELECT :campaign, assignee_id, 1 FROM assigned
RETURNING (SELECT clock FROM assigned) AS stamp \gset
INSERT INTO assignment_events (campaign_id, conversation_id, action, to_user_id, actor_id, source, stamp)
VALUES (:campaign, :id, 'ASSIGN', 'org-' || lpad(:organizer::text, 2, '0'), 'admin', 'MANUAL', :stamp);
COMMIT;
