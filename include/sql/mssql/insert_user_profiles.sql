-- MySanta user profiles of the recomputed users (full = 1: everyone), from their events in
-- (since, as_of]: the top_n categories (from user_category_affinity, written just before in the
-- same transaction: the same ranking as the decayed category score) and brands by decayed score,
-- comma-separated strongest first; the mean price of the products interacted with; the number of
-- interactions. One pass over the events, grouped by user and brand.
WITH grouped AS (
    SELECT e.user_id, p.Brand AS brand,
           SUM(CASE e.event_type WHEN 'purchase' THEN %(w_purchase)s
                                 WHEN 'add_to_cart' THEN %(w_add_to_cart)s
                                 WHEN 'view' THEN %(w_view)s ELSE 0 END
               * EXP(-%(rate)s * DATEDIFF(second, e.ts, %(as_of)s))) AS score,
           COUNT(*) AS interactions, SUM(p.Price) AS price_sum, COUNT(p.Price) AS priced
    FROM events AS e
    LEFT JOIN [Product] AS p ON p.ID = e.product_id
    WHERE e.ts > %(since)s AND e.ts <= %(as_of)s
      AND (%(full)s = 1 OR e.user_id IN (SELECT user_id FROM user_affinity_dirty))
      AND e.event_type IN ('purchase', 'add_to_cart', 'view')
    GROUP BY e.user_id, p.Brand
), brands AS (
    SELECT user_id, brand, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY score DESC, brand) AS rank
    FROM grouped WHERE brand IS NOT NULL
), categories AS (
    SELECT a.user_id, a.category,
           ROW_NUMBER() OVER (PARTITION BY a.user_id ORDER BY a.affinity DESC, a.category) AS rank
    FROM user_category_affinity AS a
    JOIN user_affinity_dirty AS d ON d.user_id = a.user_id
), top_categories AS (
    SELECT user_id, STRING_AGG(category, ',') WITHIN GROUP (ORDER BY rank) AS names
    FROM categories WHERE rank <= %(top_n)s GROUP BY user_id
), top_brands AS (
    SELECT user_id, STRING_AGG(brand, ',') WITHIN GROUP (ORDER BY rank) AS names
    FROM brands WHERE rank <= %(top_n)s GROUP BY user_id
), totals AS (
    SELECT user_id, SUM(interactions) AS interactions,
           SUM(price_sum) / NULLIF(SUM(priced), 0) AS avg_price
    FROM grouped GROUP BY user_id
)
INSERT INTO user_profiles (user_id, preferred_categories, preferred_brands, avg_price, interaction_count,
                           updated_at)
SELECT t.user_id, COALESCE(c.names, ''), COALESCE(b.names, ''), t.avg_price, t.interactions, %(updated_at)s
FROM totals AS t
LEFT JOIN top_categories AS c ON c.user_id = t.user_id
LEFT JOIN top_brands AS b ON b.user_id = t.user_id
ORDER BY t.user_id
