-- Per recomputed user (full = 1: everyone, without the join) and category: the decayed interaction
-- strength (weights and decay as in update_popularity_scores) over (since, as_of], divided by the
-- user's strongest category so
-- the values lie in (0, 1] and the top category is 1. Exponential decay scales all of a user's
-- strengths by the same factor as time passes, so the ratio changes only with new or expired events.
WITH strength AS (
    SELECT e.user_id, p."Category" AS category,
           SUM(CASE e.event_type WHEN 'purchase' THEN %(w_purchase)s
                                 WHEN 'add_to_cart' THEN %(w_add_to_cart)s
                                 WHEN 'view' THEN %(w_view)s ELSE 0 END
               * EXP(-%(rate)s * (%(as_of_epoch)s - date_part('epoch', e.ts)))) AS strength
    FROM events AS e
    JOIN "Product" AS p ON p."ID" = e.product_id
    WHERE e.ts > %(since)s AND e.ts <= %(as_of)s
      AND (%(full)s = 1 OR e.user_id IN (SELECT user_id FROM user_affinity_dirty))
      AND p."Category" IS NOT NULL
    GROUP BY e.user_id, p."Category"
)
INSERT INTO user_category_affinity (user_id, category, affinity, updated_at)
SELECT user_id, category, strength / MAX(strength) OVER (PARTITION BY user_id), %(updated_at)s
FROM strength
WHERE strength > 0
ORDER BY user_id, category  -- primary key order: the index grows at its right edge
