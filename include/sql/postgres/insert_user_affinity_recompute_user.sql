-- One user a backfill recomputes.
INSERT INTO user_affinity_recompute (run_key, user_id, created_at) VALUES (%(run_key)s, %(user_id)s, %(created_at)s)
