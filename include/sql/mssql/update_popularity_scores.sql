-- Every product's popularity_score in one statement: the sum over its events in (since, as_of]
-- of weight(event_type) * exp(-rate * age in seconds), rate = ln 2 / half-life; 0 without events.
-- Unknown event types weigh 0, i.e. are ignored (a CASE, not an IN filter: one comparison chain
-- less per row). Rows whose score does not change are not rewritten.
UPDATE [Product]
SET popularity_score = x.score
FROM (
    SELECT pr.ID AS id, COALESCE(s.score, 0) AS score
    FROM [Product] AS pr
    LEFT JOIN (
        SELECT e.product_id,
               SUM(CASE e.event_type WHEN 'purchase' THEN %(w_purchase)s
                                     WHEN 'add_to_cart' THEN %(w_add_to_cart)s
                                     WHEN 'view' THEN %(w_view)s ELSE 0 END
                   * EXP(-%(rate)s * DATEDIFF(second, e.ts, %(as_of)s))) AS score
        FROM events AS e
        WHERE e.ts > %(since)s AND e.ts <= %(as_of)s
        GROUP BY e.product_id
    ) AS s ON s.product_id = pr.ID
) AS x
WHERE x.id = [Product].ID AND [Product].popularity_score <> x.score
