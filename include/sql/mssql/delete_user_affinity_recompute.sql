-- This run's users to recompute (a retry starts afresh; publish clears them when done), and
-- those left by runs that failed for good (older than stale_before).
DELETE FROM user_affinity_recompute WHERE run_key = %(run_key)s OR created_at < %(stale_before)s
