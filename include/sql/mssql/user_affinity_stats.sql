-- Post-check of user_affinity (inside the run's transaction): the recomputed users' rows.
-- SQL Server floats hold no NaN; the range tests mirror the PostgreSQL twin.
SELECT (SELECT COUNT(*) FROM user_affinity_recompute WHERE run_key = %(run_key)s) AS recomputed_users,
       (SELECT COUNT(*) FROM user_profiles AS up
        JOIN user_affinity_recompute AS r ON r.user_id = up.user_id AND r.run_key = %(run_key)s) AS profiles,
       (SELECT COUNT(*) FROM user_profiles AS up
        JOIN user_affinity_recompute AS r ON r.user_id = up.user_id AND r.run_key = %(run_key)s
        WHERE up.interaction_count <= 0 OR up.avg_price < 0 OR up.avg_price > 1e300) AS bad_profiles,
       COUNT(a.user_id) AS affinity_rows,
       COUNT(DISTINCT a.user_id) AS affinity_users,
       COUNT(DISTINCT CASE WHEN a.affinity = 1 THEN a.user_id END) AS users_at_one,
       SUM(CASE WHEN a.affinity <= 0 OR a.affinity > 1 THEN 1 ELSE 0 END) AS out_of_range
FROM user_category_affinity AS a
JOIN user_affinity_recompute AS r ON r.user_id = a.user_id AND r.run_key = %(run_key)s
