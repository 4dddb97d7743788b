-- Writes a planned batch, every campaign's part, in one statement, and numbers its own events for the feed
-- right after what its read numbered (the heads the read moved; both locked by the lock stage).
-- Rows to change are found by their whole key, one lookup each, and changed by row id, so the kept plan
-- stays bounded by the batch at any table size.
--   $1  change_campaigns      text[] | one row per conversation the batch changes, in plan order: its
--   $2  change_conversations  text[] |   campaign, id, new assignee (NULL: not assigned now), the
--   $3  assignees             text[] |   trigger's request id, and whether a member's message starts
--   $4  change_request_ids    text[] |   its wait for a reply
--   $17 starts_wait           bool[] |
--   $5  record_campaigns      text[] | one row per trigger delivered for the first time:
--   $6  record_trigger_ids    text[] |   what it was for and what it did
--   $7  record_conversations  text[] |
--   $8  record_outcomes       text[] |
--   $9  record_assignees      text[] |
--   $10 queued_campaigns      text[] | one row per conversation the batch queues, in plan order,
--   $11 queued_conversations  text[] |   with its trigger's request id, priority and head start in
--   $12 queued_request_ids    text[] |   the queue (microseconds: `Priority::head_start_micros`)
--   $18 queued_priorities     text[] |
--   $19 queued_head_starts    int8[] |
--   $13 moved_campaigns       text[] | one row per campaign whose cursor or waiting flag moves, or
--   $14 moved_cursors         text[] |   that queues conversations: cursor and flag (NULL: unchanged),
--   $15 moved_flags           bool[] |   how many it queues
--   $20 moved_queued          int4[] |
--   $16 campaign_ids          text[]  every campaign of the batch
WITH
-- The conversations changed, each once: assigned (only if still unassigned), and the member's wait for a
-- reply started (a wait already running keeps its start).
changed AS (
  UPDATE conversations c
     SET assignee_id = coalesce(a.assignee_id, c.assignee_id),
         assigned_at = CASE WHEN a.assignee_id IS NULL THEN c.assigned_at ELSE now() END,
         assigned_by = CASE WHEN a.assignee_id IS NULL THEN c.assigned_by END,
         version = c.version + CASE WHEN a.assignee_id IS NULL THEN 0 ELSE 1 END,
         updated_at = CASE WHEN a.assignee_id IS NULL THEN c.updated_at ELSE now() END,
         awaiting_reply_since = CASE WHEN a.starts_wait THEN coalesce(c.awaiting_reply_since, now())
                                     ELSE c.awaiting_reply_since END
    FROM (SELECT a.campaign_id, a.assignee_id, a.starts_wait, a.request_id, a.ord, x.row_id
            FROM unnest($1::text[], $2::text[], $3::text[], $17::bool[], $4::text[])
                 WITH ORDINALITY AS a(campaign_id, conversation_id, assignee_id, starts_wait, request_id, ord)
           {assigned_by_key}) AS a
   WHERE {assigned_by_row_id} AND (a.assignee_id IS NULL OR c.assignee_id IS NULL)
  RETURNING c.campaign_id, {conversation_columns}, a.assignee_id IS NOT NULL AS assigned_now,
            a.request_id AS change_request_id, a.ord AS change_ord
),
-- The assignments.
assigned AS (SELECT * FROM changed WHERE assigned_now),
-- Each adds to its assignee's load (only unassigned conversations are assigned: nobody held it before).
loads AS ({record_loads}),
-- A conversation assigned leaves the waiting queue.
drained AS ({leave_queue}),
-- The campaigns' cursors, waiting flags and queue clocks (moved on by the conversations each queues).
moved AS (
  UPDATE inbox_settings s
     SET last_auto_assignee_id = coalesce(m.cursor, s.last_auto_assignee_id),
         has_waiting = coalesce(m.flag, s.has_waiting),
         queue_clock = {advance_queue_clock}
    FROM unnest($13::text[], $14::text[], $15::bool[], $20::int4[]) AS m(campaign_id, cursor, flag, queued)
   WHERE s.campaign_id = ANY($13) AND s.campaign_id = m.campaign_id
  RETURNING s.campaign_id, {first_arrival} AS first_arrival
),
-- Conversations nobody could take, in plan order, with their arrival in their campaign's queue; one waiting
-- already keeps its place (looked up by key here, not learnt from the INSERT's rows: a join of those with
-- the plan's would compare every queued row with every other). Every writer of a queue holds its campaign's
-- lock, so what this finds waiting is what the INSERT finds.
to_queue AS MATERIALIZED (
  SELECT u.* FROM (
    SELECT u.campaign_id, u.conversation_id, u.request_id, u.priority, u.head_start, u.ord,
           m.first_arrival + row_number() OVER (PARTITION BY u.campaign_id ORDER BY u.ord) - 1 AS arrival
      FROM unnest($10::text[], $11::text[], $12::text[], $18::text[], $19::int8[])
           WITH ORDINALITY AS u(campaign_id, conversation_id, request_id, priority, head_start, ord)
      JOIN moved m ON m.campaign_id = u.campaign_id) AS u
   WHERE NOT EXISTS (SELECT 1 FROM waiting_conversations w
                      WHERE w.campaign_id = u.campaign_id AND {waiting_by_key})
),
-- They join their queue by priority and arrival.
enqueued AS (
  INSERT INTO waiting_conversations (campaign_id, conversation_id, position, priority)
  SELECT q.campaign_id, q.conversation_id, {queue_key}, q.priority FROM to_queue q ORDER BY q.ord
  ON CONFLICT (campaign_id, conversation_id) DO NOTHING
),
-- The trigger records: a redelivery repeats what they say.
recorded AS (
  INSERT INTO auto_assign_triggers (campaign_id, trigger_id, conversation_id, outcome, assignee_id)
  SELECT * FROM unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::text[])
  ON CONFLICT (campaign_id, trigger_id) DO NOTHING
),
-- Each campaign's feed head, as the read left it.
heads AS MATERIALIZED (
  SELECT k.campaign_id, f.last_seq AS head FROM unnest($16::text[]) AS k(campaign_id)
  CROSS JOIN LATERAL (SELECT last_seq FROM feed_heads WHERE campaign_id = k.campaign_id) AS f
),
-- The assignments that happened, with their place in the plan (carried through the UPDATE: a join of the
-- plan's rows with the changed ones would compare every row with every other, in a keyed transaction).
assignments AS MATERIALIZED (
  SELECT campaign_id, conversation_id, assignee_id, change_request_id AS request_id, change_ord AS ord
    FROM assigned
),
-- The batch's own events, in the order they are numbered: a drained conversation's LEFT_QUEUE, then its
-- ASSIGN, in plan order; then the QUEUED ones, with the priority they wait with.
own AS MATERIALIZED (
  SELECT d.campaign_id, d.conversation_id, 'LEFT_QUEUE' AS action, NULL::text AS to_user_id,
         NULL::text AS request_id, 0 AS part, d.ord, 0 AS step, NULL::text AS priority
    FROM drained d
  UNION ALL
  SELECT campaign_id, conversation_id, 'ASSIGN', assignee_id, request_id, 0, ord, 1, NULL FROM assignments
  UNION ALL
  SELECT campaign_id, conversation_id, 'QUEUED', NULL, request_id, 1, ord, 0, priority FROM to_queue
),
-- Their history, numbered right after the head.
events AS ({insert_events}),
-- The heads move past them.
counts AS MATERIALIZED (
  SELECT h.campaign_id, h.head, h.head + o.n AS new_head FROM heads h
   CROSS JOIN LATERAL (SELECT count(*) AS n FROM own WHERE own.campaign_id = h.campaign_id) AS o
),
moved_heads AS (
  UPDATE feed_heads f SET last_seq = c.new_head FROM counts c
   WHERE f.campaign_id = ANY($16) AND f.campaign_id = c.campaign_id AND c.new_head > c.head
)
-- The conversations changed, per campaign (a campaign that changed nothing: one row without one), and
-- whether its head moved (watchers are told at commit: `store::notices::commit_notifying`).
SELECT c.campaign_id AS batch_campaign, c.new_head > c.head AS head_moved, a.*
  FROM counts c LEFT JOIN changed a ON a.campaign_id = c.campaign_id
