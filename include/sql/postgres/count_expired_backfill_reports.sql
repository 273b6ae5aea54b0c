-- Backfill reports past their retention (maintenance dry run): created before %(before)s.
SELECT count(*) AS expired FROM backfill_report WHERE created_at < %(before)s
