-- popular_items rows of the segment types popular_segments writes (replaced in full each run).
DELETE FROM popular_items WHERE segment_type IN ('gender', 'age_group', 'geo')
