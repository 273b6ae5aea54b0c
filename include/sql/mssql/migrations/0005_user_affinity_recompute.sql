-- The users each user_affinity run recomputes, keyed by run: a backfill and the scheduled run
-- may recompute at the same time. Replaces user_affinity_dirty (one set shared by every run).
IF OBJECT_ID(N'dbo.user_affinity_dirty', N'U') IS NOT NULL
DROP TABLE dbo.user_affinity_dirty;
IF OBJECT_ID(N'dbo.user_affinity_recompute', N'U') IS NULL
CREATE TABLE dbo.user_affinity_recompute (
    run_key    nvarchar(250) NOT NULL,
    user_id    bigint NOT NULL,
    created_at datetime2 NOT NULL,
    PRIMARY KEY (run_key, user_id)
);
