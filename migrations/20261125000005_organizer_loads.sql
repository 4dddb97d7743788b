-- Open conversations per assignee, kept as counts so capacity and balanced routing read one row per
-- organizer instead of counting their conversations under the campaign's auto-assign lock.
--
-- Writers never contend for a count: a statement trigger on conversations appends the statement's net
-- changes to organizer_load_changes (an insert, no row lock), and an auto-assign batch, holding the
-- campaign's lock, folds the campaign's pending changes into organizer_loads. A load is always
-- organizer_loads.open plus the pending changes, read in one snapshot.

CREATE TABLE organizer_loads (
    campaign_id text    NOT NULL,
    user_id     text    NOT NULL,
    open        integer NOT NULL,
    PRIMARY KEY (campaign_id, user_id)
);

CREATE TABLE organizer_load_changes (
    campaign_id text    NOT NULL,
    change_id   bigint  GENERATED ALWAYS AS IDENTITY,
    user_id     text    NOT NULL,
    delta       integer NOT NULL,
    PRIMARY KEY (campaign_id, change_id)
);

CREATE FUNCTION record_open_conversation_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO organizer_load_changes (campaign_id, user_id, delta)
        SELECT campaign_id, assignee_id, count(*) FROM new_rows
         WHERE status = 'OPEN' AND assignee_id IS NOT NULL
         GROUP BY campaign_id, assignee_id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO organizer_load_changes (campaign_id, user_id, delta)
        SELECT campaign_id, assignee_id, -count(*) FROM old_rows
         WHERE status = 'OPEN' AND assignee_id IS NOT NULL
         GROUP BY campaign_id, assignee_id;
    ELSE
        INSERT INTO organizer_load_changes (campaign_id, user_id, delta)
        SELECT campaign_id, user_id, sum(delta) FROM (
            SELECT campaign_id, assignee_id AS user_id, -1 AS delta FROM old_rows
             WHERE status = 'OPEN' AND assignee_id IS NOT NULL
            UNION ALL
            SELECT campaign_id, assignee_id, 1 FROM new_rows
             WHERE status = 'OPEN' AND assignee_id IS NOT NULL
        ) AS changes
        GROUP BY campaign_id, user_id
        HAVING sum(delta) <> 0;
    END IF;
    RETURN NULL;
END
$$;

-- Writers wait from here to the end of the migration, so the counts below and the trigger agree.
LOCK TABLE conversations IN SHARE ROW EXCLUSIVE MODE;

INSERT INTO organizer_loads (campaign_id, user_id, open)
SELECT campaign_id, assignee_id, count(*) FROM conversations
 WHERE status = 'OPEN' AND assignee_id IS NOT NULL
 GROUP BY campaign_id, assignee_id;

CREATE TRIGGER conversations_open_inserted AFTER INSERT ON conversations
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_open_conversation_changes();
CREATE TRIGGER conversations_open_updated AFTER UPDATE ON conversations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_open_conversation_changes();
CREATE TRIGGER conversations_open_deleted AFTER DELETE ON conversations
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_open_conversation_changes();

-- Loads no longer count conversations; one index fewer for every assignment to keep up.
DROP INDEX conversations_open_by_assignee;
