-- scripts/dead_letters.py redrive: when a dead letter was re-driven and by which backfill run
-- (NULL: not yet), so no letter is re-driven twice.
ALTER TABLE dead_letter ADD COLUMN IF NOT EXISTS redriven_at timestamp;
ALTER TABLE dead_letter ADD COLUMN IF NOT EXISTS redrive_run_id varchar(250);
