-- Forget the previous run's recomputed users.
DELETE FROM user_affinity_dirty
