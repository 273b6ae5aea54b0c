-- user_affinity's incremental state: the last successful as_of per job (the users each run
-- recomputes are in user_affinity_recompute, 0005).
CREATE TABLE IF NOT EXISTS job_watermark (
    job_name   varchar(100) PRIMARY KEY,
    watermark  timestamp NOT NULL,
    updated_at timestamp NOT NULL
);
