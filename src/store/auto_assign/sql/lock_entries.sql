-- Locks a batch's entries: its triggers' conversations and the first waiting conversations it drains, then
-- the campaigns' organizers. Everything the batch decides on is read after this, by a statement of its own.
--   $1 campaign_ids     text[]  the batch's campaigns
--   $2 drain_limits     int8[]  per campaign: how many waiting conversations to drain (0: none)
--   $3 trigger_campaigns text[] | one row per trigger
--   $4 trigger_conversations text[] |
WITH
-- The entries: each trigger's conversation, and the head of each campaign's queue as this snapshot sees it.
entries AS (
  SELECT t.campaign_id, t.conversation_id, NULL::bigint AS position
    FROM unnest($3::text[], $4::text[]) AS t(campaign_id, conversation_id)
  UNION ALL
  SELECT k.campaign_id, w.conversation_id, w.position
    FROM unnest($1::text[], $2::int8[]) AS k(campaign_id, drain_limit)
   CROSS JOIN LATERAL (
     SELECT conversation_id, position FROM waiting_conversations
      WHERE campaign_id = k.campaign_id ORDER BY position LIMIT k.drain_limit) AS w
),
-- Their conversations, locked in byte order of (campaign, id) like every multi-row locker, reached by key.
locked AS MATERIALIZED (
  SELECT e.campaign_id, e.conversation_id, e.position
    FROM (SELECT * FROM entries ORDER BY campaign_id COLLATE "C", conversation_id COLLATE "C") AS e
   CROSS JOIN LATERAL (
     SELECT 1 FROM conversations c
      WHERE c.campaign_id = e.campaign_id AND {conversation_by_key} FOR UPDATE) AS c
),
-- Then the organizers, share-locked: role, active flag and availability stay as read until commit.
organizers AS MATERIALIZED (
  SELECT u.user_id FROM users u
   WHERE u.campaign_id = ANY($1) AND u.role = 'ORGANIZER'
     AND (SELECT count(*) FROM locked) >= 0
     FOR SHARE
)
-- The waiting conversations locked: the read decides whether each still waits.
SELECT campaign_id, conversation_id
  FROM locked
 WHERE position IS NOT NULL AND (SELECT count(*) FROM organizers) >= 0
