-- user_affinity's incremental state: the last successful as_of per job (the users each run
-- recomputes are in user_affinity_recompute, 0005).
IF OBJECT_ID(N'dbo.job_watermark', N'U') IS NULL
CREATE TABLE dbo.job_watermark (
    job_name   nvarchar(100) PRIMARY KEY,
    watermark  datetime2 NOT NULL,
    updated_at datetime2 NOT NULL
);
