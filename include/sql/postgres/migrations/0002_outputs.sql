-- What the jobs write besides Redis: backups, features, audit.
CREATE TABLE IF NOT EXISTS "WeeklyRecommendation" (
    "CustomerID"  bigint NOT NULL,
    "Week"        varchar(8) NOT NULL,
    "ProductID"   bigint NOT NULL,
    "Rank"        smallint NOT NULL,
    "Score"       double precision NOT NULL,
    "Source"      varchar(16) NOT NULL,
    "GeneratedAt" timestamp NOT NULL,
    PRIMARY KEY ("Week", "CustomerID", "Rank")
);
CREATE TABLE IF NOT EXISTS popular_items (
    segment_type  varchar(16) NOT NULL,
    segment_value varchar(100) NOT NULL,
    category      varchar(100) NOT NULL,
    product_id    bigint NOT NULL,
    rank          smallint NOT NULL,
    score         double precision NOT NULL,
    computed_at   timestamp NOT NULL,
    PRIMARY KEY (segment_type, segment_value, category, rank)
);
CREATE TABLE IF NOT EXISTS user_category_affinity (
    user_id    bigint NOT NULL,
    category   varchar(100) NOT NULL,
    affinity   double precision NOT NULL,
    updated_at timestamp NOT NULL,
    PRIMARY KEY (user_id, category)
);
CREATE TABLE IF NOT EXISTS user_profiles (
    user_id              bigint PRIMARY KEY,
    preferred_categories text NOT NULL,
    preferred_brands     text NOT NULL,
    avg_price            double precision,
    interaction_count    integer NOT NULL,
    updated_at           timestamp NOT NULL
);
CREATE TABLE IF NOT EXISTS user_similarities (
    user_id         bigint NOT NULL,
    rank            smallint NOT NULL,
    similar_user_id bigint NOT NULL,
    score           double precision NOT NULL,
    model_version   varchar(40) NOT NULL,
    PRIMARY KEY (user_id, rank)
);
CREATE TABLE IF NOT EXISTS dead_letter (
    id          bigserial PRIMARY KEY,
    job_id      varchar(250) NOT NULL,
    job_name    varchar(100) NOT NULL,
    error       text NOT NULL,
    stack_trace text,
    input       text,
    created_at  timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
CREATE INDEX IF NOT EXISTS ix_dead_letter_created ON dead_letter (created_at);
CREATE TABLE IF NOT EXISTS backfill_report (
    id         bigserial PRIMARY KEY,
    run_id     varchar(250) NOT NULL,
    job_name   varchar(100) NOT NULL,
    as_of      date NOT NULL,
    succeeded  integer NOT NULL,
    failed     integer NOT NULL,
    skipped    integer NOT NULL,
    detail     text,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
