-- One auto-assign trigger as one transaction, statement by statement as the service runs it for a batch of
-- one (the service picks the next organizer in Rust between the read and the write; here SQL picks it).
-- Variables: campaign (pgbench -D campaign=...). Run with PGOPTIONS='-c search_path=<schema>'.
\set member random(1, 1000000)
BEGIN;
SELECT 'pgb-tx-' || nextval('pgbench_conversation_seq') AS conv \gset
INSERT INTO conversations (campaign_id, conversation_id, member_id, member_tags)
VALUES (:campaign, :conv, 'member-' || :member, '{}') ON CONFLICT DO NOTHING;
SELECT auto_assign_enabled, last_auto_assignee_id FROM inbox_settings WHERE campaign_id = :campaign FOR UPDATE;
SELECT c.assignee_id, t.outcome,
       ARRAY(SELECT u.user_id FROM users u
              WHERE u.campaign_id = c.campaign_id AND u.role = 'ORGANIZER' AND u.active
                AND EXISTS (SELECT 1 FROM access_group_organizers m
                              JOIN access_groups g ON g.campaign_id = m.campaign_id AND g.access_group_id = m.access_group_id
                             WHERE m.campaign_id = c.campaign_id AND m.user_id = u.user_id AND g.can_reply
                               AND (g.scope_all OR g.scope_tags && c.member_tags
                                    OR EXISTS (SELECT 1 FROM access_group_conversations x
                                                WHERE x.campaign_id = g.campaign_id AND x.access_group_id = g.access_group_id
                                                  AND x.conversation_id = c.conversation_id)))
              ORDER BY u.user_id COLLATE "C") AS eligible
  FROM conversations c
  LEFT JOIN auto_assign_triggers t ON t.campaign_id = c.campaign_id AND t.trigger_id = 'trigger-' || :conv
 WHERE c.campaign_id = :campaign AND c.conversation_id = :conv
   FOR UPDATE OF c;
WITH settings AS (SELECT last_auto_assignee_id AS last FROM inbox_settings WHERE campaign_id = :campaign),
     eligible AS (
       SELECT u.user_id COLLATE "C" AS user_id FROM users u JOIN conversations c
           ON c.campaign_id = u.campaign_id AND c.conversation_id = :conv
        WHERE u.campaign_id = :campaign AND u.role = 'ORGANIZER' AND u.active
          AND EXISTS (SELECT 1 FROM access_group_organizers m
                        JOIN access_groups g ON g.campaign_id = m.campaign_id AND g.access_group_id = m.access_group_id
                       WHERE m.campaign_id = u.campaign_id AND m.user_id = u.user_id AND g.can_reply
                         AND (g.scope_all OR g.scope_tags && c.member_tags))),
     pick AS (SELECT COALESCE((SELECT min(e.user_id) FROM eligible e, settings s WHERE e.user_id > s.last),
                              (SELECT min(user_id) FROM eligible)) AS user_id),
     assigned AS (
       UPDATE conversations c SET assignee_id = pick.user_id, assigned_at = now(), version = c.version + 1,
              updated_at = now()
         FROM pick
        WHERE c.campaign_id = :campaign AND c.conversation_id = :conv AND c.assignee_id IS NULL
          AND pick.user_id IS NOT NULL
       RETURNING c.conversation_id, c.assignee_id),
     events AS (
       INSERT INTO assignment_events (campaign_id, conversation_id, action, to_user_id, source, stamp)
       SELECT :campaign, conversation_id, 'ASSIGN', assignee_id, 'AUTO', 0 FROM assigned),
     moved AS (
       UPDATE inbox_settings s SET last_auto_assignee_id = assigned.assignee_id FROM assigned
        WHERE s.campaign_id = :campaign),
     loads AS (
       INSERT INTO organizer_load_changes (campaign_id, user_id, delta)
       SELECT :campaign, assignee_id, 1 FROM assigned)
INSERT INTO auto_assign_triggers (campaign_id, trigger_id, conversation_id, outcome, assignee_id)
SELECT :campaign, 'trigger-' || :conv, :conv, 'ASSIGNED', assignee_id FROM assigned
ON CONFLICT DO NOTHING;
COMMIT;
