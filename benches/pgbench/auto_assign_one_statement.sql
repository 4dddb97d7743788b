-- One auto-assign trigger as a single statement in its own transaction: the fewest round trips and the
-- shortest hold of the campaign's rotation lock that one-transaction-per-trigger allows.
-- Variables: campaign (pgbench -D campaign=...). Run with PGOPTIONS='-c search_path=<schema>'.
\set member random(1, 1000000)
WITH settings AS (
       SELECT last_auto_assignee_id AS last FROM inbox_settings WHERE campaign_id = :campaign FOR UPDATE),
     eligible AS (
       SELECT u.user_id COLLATE "C" AS user_id FROM users u
        WHERE u.campaign_id = :campaign AND u.role = 'ORGANIZER' AND u.active
          AND EXISTS (SELECT 1 FROM access_group_organizers m
                        JOIN access_groups g ON g.campaign_id = m.campaign_id AND g.access_group_id = m.access_group_id
                       WHERE m.campaign_id = u.campaign_id AND m.user_id = u.user_id AND g.can_reply
                         AND (g.scope_all OR g.scope_tags && '{}'::text[]))),
     pick AS (
       SELECT COALESCE((SELECT min(e.user_id) FROM eligible e, settings s WHERE e.user_id > s.last),
                       (SELECT min(user_id) FROM eligible)) AS user_id,
              'pgb-one-' || nextval('pgbench_conversation_seq') AS conversation_id),
     created AS (
       INSERT INTO conversations (campaign_id, conversation_id, member_id, assignee_id, assigned_at)
       SELECT :campaign, conversation_id, 'member-' || :member, user_id, now() FROM pick
       RETURNING conversation_id, assignee_id),
     events AS (
       INSERT INTO assignment_events (campaign_id, conversation_id, action, to_user_id, source, stamp)
       SELECT :campaign, conversation_id, 'ASSIGN', assignee_id, 'AUTO', 0 FROM created),
     moved AS (
       UPDATE inbox_settings s SET last_auto_assignee_id = created.assignee_id FROM created
        WHERE s.campaign_id = :campaign),
     loads AS (
       INSERT INTO organizer_load_changes (campaign_id, user_id, delta)
       SELECT :campaign, assignee_id, 1 FROM created)
INSERT INTO auto_assign_triggers (campaign_id, trigger_id, conversation_id, outcome, assignee_id)
SELECT :campaign, 'trigger-' || conversation_id, conversation_id, 'ASSIGNED', assignee_id FROM created;
