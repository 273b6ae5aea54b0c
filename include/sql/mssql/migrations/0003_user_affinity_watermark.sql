-- user_affinity's incremental state: the last successful as_of per job, and the users the
-- current run recomputes (filled and read inside one run; max_active_runs=1 keeps it private).
IF OBJECT_ID(N'dbo.job_watermark', N'U') IS NULL
CREATE TABLE dbo.job_watermark (
    job_name   nvarchar(100) PRIMARY KEY,
    watermark  datetime2 NOT NULL,
    updated_at datetime2 NOT NULL
);
IF OBJECT_ID(N'dbo.user_affinity_dirty', N'U') IS NULL
CREATE TABLE dbo.user_affinity_dirty (
    user_id bigint PRIMARY KEY
);
