-- Record a job's last successful as_of.
MERGE INTO job_watermark AS t
USING (SELECT %(job)s AS job_name) AS s ON t.job_name = s.job_name
WHEN MATCHED THEN UPDATE SET watermark = %(watermark)s, updated_at = %(updated_at)s
WHEN NOT MATCHED THEN INSERT (job_name, watermark, updated_at) VALUES (%(job)s, %(watermark)s, %(updated_at)s);
