-- The users this run recomputes: those with events in (changed_since, as_of], those whose events
-- left the window since the last run (expired_since, expired_until], and on a full rebuild
-- (full = 1) everyone with stored rows, so users without events in the window disappear.
INSERT INTO user_affinity_recompute (run_key, user_id, created_at)
SELECT %(run_key)s, user_id, %(created_at)s FROM (
    SELECT user_id FROM events WHERE ts > %(changed_since)s AND ts <= %(as_of)s
    UNION
    SELECT user_id FROM events WHERE ts > %(expired_since)s AND ts <= %(expired_until)s
    UNION
    SELECT user_id FROM user_category_affinity WHERE %(full)s = 1
    UNION
    SELECT user_id FROM user_profiles WHERE %(full)s = 1
) AS changed
