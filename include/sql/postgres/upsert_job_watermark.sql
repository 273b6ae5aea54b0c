-- Record a job's last successful as_of.
INSERT INTO job_watermark (job_name, watermark, updated_at)
VALUES (%(job)s, %(watermark)s, %(updated_at)s)
ON CONFLICT (job_name) DO UPDATE SET watermark = EXCLUDED.watermark, updated_at = EXCLUDED.updated_at
