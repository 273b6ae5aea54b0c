-- One user to recompute (a backfill for given users fills the scratch table with exactly them).
INSERT INTO [user_affinity_dirty] ([user_id]) VALUES (%(user_id)s)
