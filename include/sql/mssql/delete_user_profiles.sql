-- The stored profiles of the users this run recomputes.
DELETE FROM user_profiles WHERE user_id IN (SELECT user_id FROM user_affinity_dirty)
