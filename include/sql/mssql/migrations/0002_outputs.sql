-- What the jobs write besides Redis: backups, features, audit.
IF OBJECT_ID(N'dbo.WeeklyRecommendation', N'U') IS NULL
CREATE TABLE dbo.WeeklyRecommendation (
    CustomerID  bigint NOT NULL,
    Week        nvarchar(8) NOT NULL,
    ProductID   bigint NOT NULL,
    Rank        smallint NOT NULL,
    Score       float NOT NULL,
    Source      nvarchar(16) NOT NULL,
    GeneratedAt datetime2 NOT NULL,
    PRIMARY KEY (Week, CustomerID, Rank)
);
IF OBJECT_ID(N'dbo.popular_items', N'U') IS NULL
CREATE TABLE dbo.popular_items (
    segment_type  nvarchar(16) NOT NULL,
    segment_value nvarchar(100) NOT NULL,
    category      nvarchar(100) NOT NULL,
    product_id    bigint NOT NULL,
    rank          smallint NOT NULL,
    score         float NOT NULL,
    computed_at   datetime2 NOT NULL,
    PRIMARY KEY (segment_type, segment_value, category, rank)
);
IF OBJECT_ID(N'dbo.user_category_affinity', N'U') IS NULL
CREATE TABLE dbo.user_category_affinity (
    user_id    bigint NOT NULL,
    category   nvarchar(100) NOT NULL,
    affinity   float NOT NULL,
    updated_at datetime2 NOT NULL,
    PRIMARY KEY (user_id, category)
);
IF OBJECT_ID(N'dbo.user_profiles', N'U') IS NULL
CREATE TABLE dbo.user_profiles (
    user_id              bigint PRIMARY KEY,
    preferred_categories nvarchar(max) NOT NULL,
    preferred_brands     nvarchar(max) NOT NULL,
    avg_price            float,
    interaction_count    int NOT NULL,
    updated_at           datetime2 NOT NULL
);
IF OBJECT_ID(N'dbo.user_similarities', N'U') IS NULL
CREATE TABLE dbo.user_similarities (
    user_id         bigint NOT NULL,
    rank            smallint NOT NULL,
    similar_user_id bigint NOT NULL,
    score           float NOT NULL,
    model_version   nvarchar(40) NOT NULL,
    PRIMARY KEY (user_id, rank)
);
IF OBJECT_ID(N'dbo.dead_letter', N'U') IS NULL
CREATE TABLE dbo.dead_letter (
    id          bigint IDENTITY PRIMARY KEY,
    job_id      nvarchar(250) NOT NULL,
    job_name    nvarchar(100) NOT NULL,
    error       nvarchar(max) NOT NULL,
    stack_trace nvarchar(max),
    input       nvarchar(max),
    created_at  datetime2 NOT NULL DEFAULT SYSUTCDATETIME()
);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_dead_letter_created')
CREATE INDEX ix_dead_letter_created ON dbo.dead_letter (created_at);
IF OBJECT_ID(N'dbo.backfill_report', N'U') IS NULL
CREATE TABLE dbo.backfill_report (
    id         bigint IDENTITY PRIMARY KEY,
    run_id     nvarchar(250) NOT NULL,
    job_name   nvarchar(100) NOT NULL,
    as_of      date NOT NULL,
    succeeded  int NOT NULL,
    failed     int NOT NULL,
    skipped    int NOT NULL,
    detail     nvarchar(max),
    created_at datetime2 NOT NULL DEFAULT SYSUTCDATETIME()
);
