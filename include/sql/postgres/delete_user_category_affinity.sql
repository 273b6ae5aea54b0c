-- The stored affinities of the users this run recomputes.
DELETE FROM user_category_affinity
WHERE user_id IN (SELECT user_id FROM user_affinity_recompute WHERE run_key = %(run_key)s)
