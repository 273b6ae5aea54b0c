-- The stored profiles of the users this run recomputes.
DELETE FROM user_profiles
WHERE user_id IN (SELECT user_id FROM user_affinity_recompute WHERE run_key = %(run_key)s)
