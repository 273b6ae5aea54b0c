-- Mark one dead letter as re-driven by backfill run %(run_id)s, so it is not re-driven twice.
UPDATE [dead_letter] SET redriven_at = %(redriven_at)s, redrive_run_id = %(run_id)s
WHERE id = %(id)s AND redriven_at IS NULL
