-- cf_training: per user, product and event type the events since %(since)s and before %(until)s,
-- split at %(cutoff)s into training (holdout 0) and the temporal holdout (holdout 1).
SELECT t.user_id, t.product_id, t.event_type, t.holdout, COUNT(*) AS n
FROM (
    SELECT e.user_id, e.product_id, e.event_type,
           CASE WHEN e.ts >= %(cutoff)s THEN 1 ELSE 0 END AS holdout
    FROM events AS e
    WHERE e.ts >= %(since)s AND e.ts < %(until)s
) AS t
GROUP BY t.user_id, t.product_id, t.event_type, t.holdout
ORDER BY t.user_id, t.product_id, t.event_type, t.holdout
