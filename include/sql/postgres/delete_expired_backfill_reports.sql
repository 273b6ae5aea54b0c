-- One batch of backfill reports past their retention: at most %(batch)s rows per statement.
DELETE FROM backfill_report
WHERE id IN (SELECT id FROM backfill_report WHERE created_at < %(before)s ORDER BY id LIMIT %(batch)s)
