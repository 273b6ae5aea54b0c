-- user_affinity's incremental state: the last successful as_of per job, and the users the
-- current run recomputes (filled and read inside one run; max_active_runs=1 keeps it private).
CREATE TABLE IF NOT EXISTS job_watermark (
    job_name   varchar(100) PRIMARY KEY,
    watermark  timestamp NOT NULL,
    updated_at timestamp NOT NULL
);
CREATE TABLE IF NOT EXISTS user_affinity_dirty (
    user_id bigint PRIMARY KEY
);
