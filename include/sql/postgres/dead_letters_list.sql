-- Dead letters of one job (or all when %(job_name)s is NULL), newest first.
SELECT id, job_id, job_name, error, input, created_at, redriven_at, redrive_run_id
FROM dead_letter
WHERE (CAST(%(job_name)s AS varchar(100)) IS NULL OR job_name = %(job_name)s)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
