-- Group names and tags in their normal form, as the service now stores them (`domain::validate::normal_form`):
-- Unicode NFKC, each run of whitespace one space, trimmed. Names that look alike ("Team A" with a
-- no-break space, full-width letters) are then one name, and the unique index holds that in the database
-- for every writer, not only in the service.
CREATE FUNCTION normal_text(value text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
        SELECT btrim(regexp_replace(
            normalize(value, NFKC),
            -- Unicode's White_Space: [[:space:]] is ASCII's alone under the C locale.
            '[[:space:]\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+',
            ' ', 'g'))
    $$;

DROP INDEX access_groups_name;

-- Existing names that become one: the oldest group keeps the name, the others are told apart by the start
-- of their id ("Team A (3f2c9a1e)"), so that nothing is lost and an admin can rename them.
WITH normal AS (
    SELECT campaign_id, access_group_id, name,
           CASE WHEN row_number() OVER (PARTITION BY campaign_id, lower(normal_text(name))
                                        ORDER BY created_at, access_group_id) = 1
                THEN normal_text(name)
                ELSE normal_text(name) || ' (' || left(access_group_id::text, 8) || ')'
           END AS normal_name
    FROM access_groups
)
UPDATE access_groups g
   SET name = n.normal_name, updated_at = now()
  FROM normal n
 WHERE g.campaign_id = n.campaign_id AND g.access_group_id = n.access_group_id
   AND g.name <> n.normal_name;

CREATE UNIQUE INDEX access_groups_name ON access_groups (campaign_id, lower(normal_text(name)));

-- Tags: normal, deduplicated and sorted by bytes, as the service stores them.
UPDATE access_groups
   SET scope_tags = ARRAY(SELECT DISTINCT normal_text(t) COLLATE "C" FROM unnest(scope_tags) t ORDER BY 1)
 WHERE EXISTS (SELECT 1 FROM unnest(scope_tags) t WHERE t <> normal_text(t));

UPDATE conversations
   SET member_tags = ARRAY(SELECT DISTINCT normal_text(t) COLLATE "C" FROM unnest(member_tags) t ORDER BY 1)
 WHERE EXISTS (SELECT 1 FROM unnest(member_tags) t WHERE t <> normal_text(t));
