-- The events user_affinity scores: those in (since, as_of] of every user (everyone = 1) or of the
-- users this run recomputes (everyone = 0). Two branches, not an OR: the planner skips the one whose
-- constant condition is false and joins the recomputed users by index or hash.
-- include/models/affinity.py does the arithmetic.
SELECT e.user_id, e.product_id, e.event_type, e.ts
FROM events AS e
WHERE e.ts > %(since)s AND e.ts <= %(as_of)s AND %(everyone)s = 1
UNION ALL
SELECT e.user_id, e.product_id, e.event_type, e.ts
FROM events AS e
JOIN user_affinity_recompute AS r ON r.user_id = e.user_id AND r.run_key = %(run_key)s
WHERE e.ts > %(since)s AND e.ts <= %(as_of)s AND %(everyone)s = 0
