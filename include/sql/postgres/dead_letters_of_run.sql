-- The inputs of the dead letters whose job_id starts with %(prefix)s (a LIKE pattern ending in %%):
-- the entities one backfill date sent there.
SELECT job_id, input
FROM dead_letter
WHERE job_id LIKE %(prefix)s
ORDER BY id
