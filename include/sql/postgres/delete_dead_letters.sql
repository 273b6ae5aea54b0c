DELETE FROM dead_letter WHERE job_id = %(job_id)s AND job_name = %(job_name)s
