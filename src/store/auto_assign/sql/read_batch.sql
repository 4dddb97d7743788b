-- What a batch decides on, read once its campaigns and entries are locked (a statement begun after every
-- lock was had, so it sees everything committed before), and the feed numbers of what it saw: the events
-- committed unnumbered are numbered here, before the batch's own; later ones after them (see the feed doc).
--   $1 campaign_ids        text[]  the batch's campaigns
--   $2 enabled             bool[]  | per campaign: auto-assignment is on (read who is eligible),
--   $3 wants_last_assigned bool[]  | the rotation starts after the last organizer assigned by any path,
--   $4 loads_matter        bool[]  | a default capacity or balanced routing is in play
--   $5 entry_campaigns     text[]  | one row per entry: its campaign,
--   $6 entry_ords          int8[]  | its trigger's place in the batch (NULL: a waiting conversation),
--   $7 entry_trigger_ids   text[]  | its trigger id (NULL: a waiting conversation),
--   $8 entry_conversations text[]  | its conversation
--   $9 feed_channel        text    the channel NOTIFYed when a campaign's feed head moves
WITH
-- The campaigns and what to read for each.
k AS MATERIALIZED (
  SELECT * FROM unnest($1::text[], $2::bool[], $3::bool[], $4::bool[])
         AS k(campaign_id, enabled, wants_last_assigned, loads_matter)
),
-- The campaigns' organizers (share-locked by the lock stage).
organizers AS MATERIALIZED (
  SELECT u.campaign_id, u.user_id, u.role, u.active, u.availability, u.capacity FROM users u
   WHERE u.campaign_id = ANY($1) AND u.role = 'ORGANIZER'
),
-- Loads are read where capacity or balance is in play: a default capacity, balance, or someone's own.
wanted AS MATERIALIZED (
  SELECT k.campaign_id, k.enabled, k.wants_last_assigned,
         k.enabled AND (k.loads_matter OR EXISTS (
           SELECT 1 FROM organizers o WHERE o.campaign_id = k.campaign_id AND o.capacity IS NOT NULL)) AS loads
    FROM k
),
-- Folds those campaigns' pending load changes into the counts (`folded`, `pending`, `counted`).
{fold},
-- The feed's heads and the events committed unnumbered (`heads`, `backlog`), all of them.
{backlog},
-- Numbers them and moves the heads: what this batch saw comes before its own events.
numbered AS (
  UPDATE assignment_events e SET seq = b.seq FROM backlog b WHERE e.ctid = b.row_id
  RETURNING e.campaign_id
),
moved_heads AS (
  UPDATE feed_heads f SET last_seq = h.head + n.numbered
    FROM heads h CROSS JOIN LATERAL (
      SELECT count(*) AS numbered FROM backlog b WHERE b.campaign_id = h.campaign_id) AS n
   WHERE f.campaign_id = ANY($1) AND f.campaign_id = h.campaign_id AND n.numbered > 0
  RETURNING f.campaign_id
),
-- Watchers learn of the new numbers at commit.
notified AS MATERIALIZED (
  SELECT pg_notify($9, current_schema() || '/' || campaign_id) FROM moved_heads
),
-- Per campaign: who was assigned last in feed order, and the loads of its active, available organizers.
facts AS MATERIALIZED (
  SELECT w.campaign_id, w.enabled, w.loads AS loads_read,
         CASE WHEN w.wants_last_assigned THEN {last_assigned} END AS last_assigned,
         l.users AS load_users, l.capacities AS load_capacities, l.open AS load_open
    FROM wanted w
    LEFT JOIN LATERAL (
      SELECT array_agg(o.user_id ORDER BY o.user_id) AS users,
             array_agg(o.capacity ORDER BY o.user_id) AS capacities,
             array_agg(coalesce(l.open, 0)::bigint + coalesce(p.delta, 0) ORDER BY o.user_id) AS open
        FROM (SELECT * FROM organizers o
               WHERE w.loads AND o.campaign_id = w.campaign_id AND o.active
                 AND o.availability = 'AVAILABLE') AS o
        LEFT JOIN LATERAL (SELECT l.open FROM organizer_loads l
                            WHERE l.campaign_id = o.campaign_id AND l.user_id = o.user_id) AS l ON true
        LEFT JOIN (SELECT user_id, delta FROM pending WHERE campaign_id = w.campaign_id) AS p
               ON p.user_id = o.user_id) AS l ON true
),
-- The entries, as the lock stage locked them.
entries AS MATERIALIZED (
  SELECT * FROM unnest($5::text[], $6::int8[], $7::text[], $8::text[])
         AS i(campaign_id, ord, trigger_id, conversation_id)
),
-- Each entry with its conversation, its queue row (a waiting conversation's, if still there), its trigger's
-- record and who is eligible for it: computed once, here.
read_entries AS MATERIALIZED (
  SELECT i.campaign_id AS entry_campaign, i.ord, i.trigger_id, q.position, q.waiting_since,
         q.position IS NOT NULL AS queue_row_found, {conversation_columns},
         t.outcome AS recorded_outcome, t.assignee_id AS recorded_assignee,
         t.conversation_id AS recorded_conversation,
         CASE WHEN ks.enabled THEN ARRAY(
           SELECT o.user_id FROM organizers o
            WHERE o.campaign_id = c.campaign_id AND {eligible}
            ORDER BY o.user_id COLLATE "C")
         ELSE ARRAY[]::text[] END AS eligible
    FROM entries i
   CROSS JOIN LATERAL (SELECT k.enabled FROM k WHERE k.campaign_id = i.campaign_id) AS ks
   CROSS JOIN LATERAL (
     SELECT * FROM conversations c WHERE c.campaign_id = i.campaign_id AND {conversation_by_key}) AS c
    LEFT JOIN LATERAL (
     SELECT w.position, w.waiting_since FROM waiting_conversations w
      WHERE i.ord IS NULL AND w.campaign_id = i.campaign_id AND {queue_row_by_key}) AS q ON true
    LEFT JOIN LATERAL (
     SELECT t.outcome, t.assignee_id, t.conversation_id FROM auto_assign_triggers t
      WHERE t.campaign_id = i.campaign_id AND t.trigger_id = i.trigger_id LIMIT 1) AS t ON true
)
-- One row per campaign and entry (a campaign without entries: one row without one, so the notifications
-- are sent whatever is left), with the campaign's facts.
SELECT k.campaign_id AS batch_campaign, f.last_assigned, f.load_users, f.load_capacities, f.load_open,
       f.loads_read, e.*
  FROM k
 CROSS JOIN LATERAL (SELECT * FROM facts WHERE facts.campaign_id = k.campaign_id) AS f
  LEFT JOIN read_entries e ON e.entry_campaign = k.campaign_id
 WHERE (SELECT count(*) FROM notified) >= 0
