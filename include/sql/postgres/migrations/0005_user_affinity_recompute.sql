-- The users each user_affinity run recomputes, keyed by run: a backfill and the scheduled run
-- may recompute at the same time. Replaces user_affinity_dirty (one set shared by every run).
DROP TABLE IF EXISTS user_affinity_dirty;
CREATE TABLE IF NOT EXISTS user_affinity_recompute (
    run_key    varchar(250) NOT NULL,
    user_id    bigint NOT NULL,
    created_at timestamp NOT NULL,
    PRIMARY KEY (run_key, user_id)
);
