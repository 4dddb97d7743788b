-- Locks a batch's entries and reads what it decides on. Its triggers' conversations and the first waiting
-- conversations of each campaign it drains are locked (in one order), then the campaigns' organizers are
-- share-locked; a locked row's newest version is compared with the one this statement's snapshot sees, and
-- if a commit changed one in between, `changed` says so and the batch reads again (the same entries; every
-- lock held, so the next snapshot is the truth). The events committed unnumbered that the snapshot sees are
-- numbered here, before the batch's own (see the feed doc); events committed later come after them.
--   $1  campaign_ids          text[] | per campaign:
--   $2  enabled               bool[] |   auto-assignment is on (read who is eligible),
--   $3  wants_last_assigned   bool[] |   the rotation starts after the last organizer assigned by any path,
--   $4  loads_matter          bool[] |   a default capacity or balanced routing is in play,
--   $5  drain_limits          int8[] |   how many waiting conversations to lock from the queue's head
--   $6  trigger_campaigns     text[] | one row per trigger: its campaign,
--   $7  trigger_ords          int8[] |   its place in its campaign's part,
--   $8  trigger_ids           text[] |   its trigger id,
--   $9  trigger_conversations text[] |   its conversation
--   $10 waiting_campaigns     text[] | waiting conversations to read again (named, not from the queue's
--   $11 waiting_conversations text[] |   head): those a first read locked
WITH
-- The campaigns and what to read for each.
k AS MATERIALIZED (
  SELECT * FROM unnest($1::text[], $2::bool[], $3::bool[], $4::bool[], $5::int8[])
         AS k(campaign_id, enabled, wants_last_assigned, loads_matter, drain_limit)
),
-- The entries: each trigger's conversation, the head of each campaign's queue, the waiting ones named.
entries AS (
  SELECT t.campaign_id, t.ord, t.trigger_id, t.conversation_id
    FROM unnest($6::text[], $7::int8[], $8::text[], $9::text[]) AS t(campaign_id, ord, trigger_id, conversation_id)
  UNION ALL
  SELECT k.campaign_id, NULL::int8, NULL::text, w.conversation_id
    FROM k CROSS JOIN LATERAL (
      SELECT conversation_id FROM waiting_conversations
       WHERE campaign_id = k.campaign_id ORDER BY position LIMIT k.drain_limit) AS w
  UNION ALL
  SELECT w.campaign_id, NULL::int8, NULL::text, w.conversation_id
    FROM unnest($10::text[], $11::text[]) AS w(campaign_id, conversation_id)
),
-- Their conversations, locked in byte order of (campaign, id) like every multi-row locker, reached by key;
-- a waiting one's queue row is locked after it (whoever takes a conversation out of the queue locks the
-- conversation first): gone if it left the queue. `changed`: the version locked is not the snapshot's.
locked AS MATERIALIZED (
  SELECT e.campaign_id AS entry_campaign, e.ord, e.trigger_id, q.position, q.waiting_since, c.*,
         c.row_version IS DISTINCT FROM (
           SELECT s.xmin::text FROM conversations s
            WHERE s.campaign_id = e.campaign_id AND {snapshot_by_key}) AS changed
    FROM (SELECT * FROM entries ORDER BY campaign_id COLLATE "C", conversation_id COLLATE "C", ord) AS e
   CROSS JOIN LATERAL (
     SELECT c.*, c.xmin::text AS row_version FROM conversations c
      WHERE c.campaign_id = e.campaign_id AND {conversation_by_key} FOR UPDATE) AS c
    LEFT JOIN LATERAL (
     SELECT w.position, w.waiting_since FROM waiting_conversations w
      WHERE e.ord IS NULL AND w.campaign_id = e.campaign_id AND {queue_row_by_key} FOR KEY SHARE) AS q ON true
),
-- Then the campaigns' organizers, share-locked: role, active flag, availability and capacity stay as read
-- until the batch commits.
organizers AS MATERIALIZED (
  SELECT u.campaign_id, u.user_id, u.role, u.active, u.availability, u.capacity, u.xmin::text AS row_version
    FROM users u
   WHERE u.campaign_id = ANY($1) AND u.role = 'ORGANIZER' AND (SELECT count(*) FROM locked) >= 0
     FOR SHARE
),
-- Whether a commit changed a locked row after this statement's snapshot was taken.
changed AS MATERIALIZED (
  SELECT EXISTS (SELECT 1 FROM locked WHERE locked.changed)
      OR EXISTS (SELECT 1 FROM organizers o
                  WHERE o.row_version IS DISTINCT FROM (
                    SELECT s.xmin::text FROM users s WHERE s.campaign_id = o.campaign_id AND s.user_id = o.user_id))
      OR (SELECT count(*) FROM organizers)
         <> (SELECT count(*) FROM users s WHERE s.campaign_id = ANY($1) AND s.role = 'ORGANIZER') AS changed
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
  UPDATE assignment_events e SET seq = b.seq FROM backlog b WHERE {event_by_row_id}
  RETURNING e.campaign_id
),
moved_heads AS (
  UPDATE feed_heads f SET last_seq = h.head + n.numbered
    FROM heads h CROSS JOIN LATERAL (
      SELECT count(*) AS numbered FROM backlog b WHERE b.campaign_id = h.campaign_id) AS n
   WHERE f.campaign_id = ANY($1) AND f.campaign_id = h.campaign_id AND n.numbered > 0
  RETURNING f.campaign_id
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
-- Each entry with its conversation, its queue row, its trigger's record, who is eligible for it, and why its
-- holder (if any) cannot answer it or whether they are away.
read_entries AS MATERIALIZED (
  SELECT c.entry_campaign, c.ord, c.trigger_id, c.position, c.waiting_since,
         c.position IS NOT NULL AS queue_row_found, {conversation_columns},
         t.outcome AS recorded_outcome, t.assignee_id AS recorded_assignee,
         t.conversation_id AS recorded_conversation,
         h.holder_cause, h.holder_availability,
         CASE WHEN ks.enabled THEN ARRAY(
           SELECT o.user_id FROM organizers o
            WHERE o.campaign_id = c.campaign_id AND {eligible}
            ORDER BY o.user_id COLLATE "C")
         ELSE ARRAY[]::text[] END AS eligible
    FROM locked c
   CROSS JOIN LATERAL (SELECT k.enabled FROM k WHERE k.campaign_id = c.entry_campaign) AS ks
    LEFT JOIN LATERAL (
     SELECT t.outcome, t.assignee_id, t.conversation_id FROM auto_assign_triggers t
      WHERE t.campaign_id = c.entry_campaign AND t.trigger_id = c.trigger_id LIMIT 1) AS t ON true
    -- Its holder (if any): why they cannot answer it, and (an organizer's) whether they are there to.
    LEFT JOIN LATERAL (
     SELECT {holder_cause} AS holder_cause,
            CASE WHEN h.role = 'ORGANIZER' THEN h.availability END AS holder_availability FROM users h
      WHERE c.assignee_id IS NOT NULL AND h.campaign_id = c.campaign_id AND h.user_id = c.assignee_id) AS h
      ON true
)
-- One row per campaign and entry (a campaign without entries: one row without one), with the campaign's
-- facts and whether its head moved (watchers are told at commit: `store::notices::commit_notifying`).
SELECT k.campaign_id AS batch_campaign, (SELECT changed FROM changed) AS changed, f.last_assigned, f.load_users, f.load_capacities, f.load_open,
       f.loads_read, k.campaign_id IN (SELECT campaign_id FROM moved_heads) AS head_moved, e.*
  FROM k
 CROSS JOIN LATERAL (SELECT * FROM facts WHERE facts.campaign_id = k.campaign_id) AS f
  LEFT JOIN read_entries e ON e.entry_campaign = k.campaign_id
