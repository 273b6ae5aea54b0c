-- What the recomputed users' Redis hashes hold: their categories and affinities; a user without
-- rows comes back once with a null category (their hash is deleted).
SELECT d.user_id, a.category, a.affinity
FROM user_affinity_dirty AS d
LEFT JOIN user_category_affinity AS a ON a.user_id = d.user_id
ORDER BY d.user_id, a.category
