-- Pre-check of the event scoring jobs: the events in the window (since, as_of], their newest
-- timestamp, nulls in the required columns and event types the jobs do not score.
SELECT COUNT(*) AS events,
       MAX(ts) AS last_event,
       SUM(CASE WHEN user_id IS NULL THEN 1 ELSE 0 END) AS null_user_id,
       SUM(CASE WHEN product_id IS NULL THEN 1 ELSE 0 END) AS null_product_id,
       SUM(CASE WHEN event_type IS NULL THEN 1 ELSE 0 END) AS null_event_type,
       SUM(CASE WHEN event_type NOT IN ('purchase', 'add_to_cart', 'view') THEN 1 ELSE 0 END) AS unknown_event_type
FROM events
WHERE ts > %(since)s AND ts <= %(as_of)s
