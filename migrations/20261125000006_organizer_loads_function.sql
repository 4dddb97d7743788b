-- An auto-assign batch's loads read (folding the pending changes first), as a function whose own statement
-- keeps a cached plan: batches plan their statements afresh (plan_cache_mode = force_custom_plan, for the
-- statements whose best plan depends on table sizes), and this one's plan is key lookups at any size, so
-- planning it every batch would only cost time. Call it only while holding the campaign's auto-assign lock.
CREATE FUNCTION fold_and_read_loads(p_campaign_id text)
    RETURNS TABLE (user_id text, capacity integer, open bigint)
    LANGUAGE plpgsql
    SET plan_cache_mode = auto
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH folded AS (
        DELETE FROM organizer_load_changes c WHERE c.campaign_id = p_campaign_id RETURNING c.user_id, c.delta
    ), pending AS (
        SELECT f.user_id, sum(f.delta)::integer AS delta FROM folded f GROUP BY f.user_id
    ), counted AS (
        INSERT INTO organizer_loads AS l (campaign_id, user_id, open)
        SELECT p_campaign_id, p.user_id, p.delta FROM pending p
        ON CONFLICT (campaign_id, user_id) DO UPDATE SET open = l.open + excluded.open
    )
    SELECT u.user_id, u.capacity, (coalesce(l.open, 0) + coalesce(p.delta, 0))::bigint
      FROM users u
      LEFT JOIN organizer_loads l ON l.campaign_id = u.campaign_id AND l.user_id = u.user_id
      LEFT JOIN pending p ON p.user_id = u.user_id
     WHERE u.campaign_id = p_campaign_id AND u.role = 'ORGANIZER' AND u.active
       AND u.availability = 'AVAILABLE';
END
$$;
