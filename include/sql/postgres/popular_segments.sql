-- MySanta's popular items per segment: the decayed event score (as update_popularity_scores)
-- summed per (gender | age_group | geo) x product in one pass (GROUPING SETS), then the top
-- top_n products of each segment and category. Clients without the segment value are left out.
WITH scored AS (
    SELECT e.product_id, c.gender, c.age_group, CAST(c.geo_id AS varchar(100)) AS geo,
           CASE e.event_type WHEN 'purchase' THEN %(w_purchase)s
                             WHEN 'add_to_cart' THEN %(w_add_to_cart)s
                             WHEN 'view' THEN %(w_view)s ELSE 0 END
           * EXP(-%(rate)s * (%(as_of_epoch)s - date_part('epoch', e.ts))) AS score
    FROM events AS e
    JOIN "Client" AS c ON c."ID" = e.user_id
    WHERE e.ts > %(since)s AND e.ts <= %(as_of)s
), segments AS (
    SELECT CASE WHEN GROUPING(gender) = 0 THEN 'gender'
                WHEN GROUPING(age_group) = 0 THEN 'age_group' ELSE 'geo' END AS segment_type,
           CASE WHEN GROUPING(gender) = 0 THEN gender
                WHEN GROUPING(age_group) = 0 THEN age_group ELSE geo END AS segment_value,
           product_id, SUM(score) AS score
    FROM scored
    GROUP BY GROUPING SETS ((gender, product_id), (age_group, product_id), (geo, product_id))
), ranked AS (
    SELECT s.segment_type, s.segment_value, p."Category" AS category, s.product_id, s.score,
           ROW_NUMBER() OVER (PARTITION BY s.segment_type, s.segment_value, p."Category"
                              ORDER BY s.score DESC, s.product_id) AS rank
    FROM segments AS s
    JOIN "Product" AS p ON p."ID" = s.product_id
    WHERE s.segment_value IS NOT NULL AND p."Category" IS NOT NULL AND s.score > 0
)
SELECT segment_type, segment_value, category, product_id, rank, score
FROM ranked
WHERE rank <= %(top_n)s
ORDER BY segment_type, segment_value, category, rank
