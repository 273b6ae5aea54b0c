-- One backfill run's report rows (its report task rewrites them when retried).
DELETE FROM [backfill_report]
WHERE [run_id] = %(run_id)s
