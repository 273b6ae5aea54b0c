-- Dead letters not re-driven yet, of one job (all when %(job_name)s is NULL), created since
-- %(since)s (all when NULL), oldest first.
SELECT id, job_id, job_name, error, input, created_at
FROM [dead_letter]
WHERE redriven_at IS NULL
  AND (CAST(%(job_name)s AS nvarchar(100)) IS NULL OR job_name = %(job_name)s)
  AND (CAST(%(since)s AS datetime2) IS NULL OR created_at >= %(since)s)
ORDER BY id
