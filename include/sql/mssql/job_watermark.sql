-- The last successful as_of of a job.
SELECT watermark FROM job_watermark WHERE job_name = %(job)s
