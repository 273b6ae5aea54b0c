-- Dead letters of one job (or all when %(job_name)s is NULL), newest first.
SELECT TOP (%(limit)s) id, job_id, job_name, error, input, created_at, redriven_at, redrive_run_id
FROM [dead_letter]
WHERE (CAST(%(job_name)s AS nvarchar(100)) IS NULL OR job_name = %(job_name)s)
ORDER BY created_at DESC, id DESC
