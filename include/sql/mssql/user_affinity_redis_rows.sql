-- What the recomputed users' Redis hashes hold: their categories and affinities; a user without
-- rows comes back once with a null category (their hash is deleted).
SELECT r.user_id, a.category, a.affinity
FROM user_affinity_recompute AS r
LEFT JOIN user_category_affinity AS a ON a.user_id = r.user_id
WHERE r.run_key = %(run_key)s
ORDER BY r.user_id, a.category
