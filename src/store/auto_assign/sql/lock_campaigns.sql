-- Takes the auto-assign locks of a batch's campaigns, after creating what its triggers bring.
--   $1 campaign_ids    text[]  the campaigns to lock
--   $2 new_campaigns   text[]  | one row per conversation a trigger names with member data,
--   $3 new_ids         text[]  | in (campaign, id) order
--   $4 new_members     text[]  |
--   $5 new_tags        text[]  | each conversation's tags joined by $6
--   $6 tag_separator   text
--   $7 feed_heads      text[]  the campaigns whose feed heads to lock too (sorted), or none
WITH
-- Conversations the triggers name that do not exist yet; concurrent batches insert in one order.
conversations_created AS (
  INSERT INTO conversations (campaign_id, conversation_id, member_id, member_tags)
  SELECT i.campaign_id, i.conversation_id, i.member_id, string_to_array(i.tags, $6)
    FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
         AS i(campaign_id, conversation_id, member_id, tags)
  ON CONFLICT (campaign_id, conversation_id) DO NOTHING
  RETURNING 1
),
-- A campaign never configured gets its settings row (auto-assignment off), so its triggers serialise too.
settings_created AS (
  INSERT INTO inbox_settings (campaign_id)
  SELECT k FROM unnest($1::text[]) AS k
   WHERE NOT EXISTS (SELECT 1 FROM inbox_settings s WHERE s.campaign_id = k)
  ON CONFLICT DO NOTHING
  RETURNING 1
),
-- The feed heads, made on first use. Nothing reads this CTE, so PostgreSQL runs it after the main query:
-- once the settings rows are locked. `DO UPDATE … WHERE false` locks an existing head without writing it.
heads_locked AS (
  INSERT INTO feed_heads AS f (campaign_id)
  SELECT campaign_id FROM unnest($7::text[]) WITH ORDINALITY AS k(campaign_id, ord) ORDER BY ord
  ON CONFLICT (campaign_id) DO UPDATE SET last_seq = f.last_seq WHERE false
)
-- The settings rows, locked in byte order of campaign id. The inserts are an InitPlan of the condition, so
-- they finish before the first row is locked; rows made here are not in this statement's snapshot.
SELECT {settings_columns}
  FROM inbox_settings
 WHERE campaign_id = ANY($1)
   AND (SELECT count(*) FROM conversations_created) + (SELECT count(*) FROM settings_created) >= 0
 ORDER BY campaign_id COLLATE "C"
   FOR UPDATE
