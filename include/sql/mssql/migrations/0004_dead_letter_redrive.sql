-- scripts/dead_letters.py redrive: when a dead letter was re-driven and by which backfill run
-- (NULL: not yet), so no letter is re-driven twice.
IF NOT EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'dbo.dead_letter') AND name = N'redriven_at')
ALTER TABLE dbo.dead_letter ADD redriven_at datetime2 NULL;
IF NOT EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'dbo.dead_letter') AND name = N'redrive_run_id')
ALTER TABLE dbo.dead_letter ADD redrive_run_id nvarchar(250) NULL;
