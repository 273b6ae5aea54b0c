-- Weekly demand of one shard's forecastable products (ProductID modulo `of` = `shard`), with the
-- eligibility of forecast_products; a `limit` reaches here as the last product kept in the order
-- (orders DESC, product_id): cutoff_orders and cutoff_product.
WITH lines AS (
    SELECT oi."ProductID" AS product_id, o."ID" AS order_id, ca."ClientID" AS customer_id,
           CAST(date_trunc('week', o."Created") AS date) AS week_start, oi."Quantity" AS quantity
    FROM "OrderItem" AS oi
    JOIN "Order" AS o ON o."ID" = oi."OrderID"
    JOIN "ClientAgreement" AS ca ON ca."ID" = o."ClientAgreementID"
    WHERE o."Created" >= %(start)s AND o."Created" < %(until)s AND oi."ProductID" %% %(of)s = %(shard)s
      AND oi."Quantity" > 0 AND oi."Quantity" <= %(max_quantity)s  -- the source-row rules (source_bad_rows)
      AND NOT EXISTS (SELECT 1 FROM "OrderItem" AS twin WHERE twin."OrderID" = oi."OrderID"
                      AND twin."ProductID" = oi."ProductID" AND twin."ID" < oi."ID")
), eligible AS (
    SELECT product_id
    FROM lines
    GROUP BY product_id
    HAVING count(DISTINCT customer_id) >= %(min_customers)s AND count(DISTINCT order_id) >= %(min_orders)s
       AND (count(DISTINCT order_id) > %(cutoff_orders)s
            OR (count(DISTINCT order_id) = %(cutoff_orders)s AND product_id <= %(cutoff_product)s))
)
SELECT l.product_id, l.week_start, sum(l.quantity) AS quantity,
       count(DISTINCT l.customer_id) AS customers, max(p."Category") AS category
FROM lines AS l
JOIN eligible AS e ON e.product_id = l.product_id
LEFT JOIN "Product" AS p ON p."ID" = l.product_id
GROUP BY l.product_id, l.week_start
ORDER BY l.product_id, l.week_start
