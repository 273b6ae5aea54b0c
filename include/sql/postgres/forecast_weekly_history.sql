-- Weekly demand of one shard's forecastable products (the eligibility of forecast_products):
-- quantity and distinct customers per product and ISO week (Monday start).
WITH eligible AS (
    SELECT oi."ProductID" AS product_id,
           row_number() OVER (ORDER BY count(DISTINCT o."ID") DESC, oi."ProductID") AS order_rank
    FROM "OrderItem" AS oi
    JOIN "Order" AS o ON o."ID" = oi."OrderID"
    JOIN "ClientAgreement" AS ca ON ca."ID" = o."ClientAgreementID"
    WHERE o."Created" >= %(start)s AND o."Created" < %(until)s AND oi."ProductID" IS NOT NULL
    GROUP BY oi."ProductID"
    HAVING count(DISTINCT ca."ClientID") >= %(min_customers)s AND count(DISTINCT o."ID") >= %(min_orders)s
), shard AS (
    SELECT product_id FROM eligible WHERE order_rank <= %(limit)s AND product_id %% %(of)s = %(shard)s
)
SELECT oi."ProductID" AS product_id,
       CAST(date_trunc('week', o."Created") AS date) AS week_start,
       sum(oi."Quantity") AS quantity,
       count(DISTINCT ca."ClientID") AS customers,
       max(p."Category") AS category
FROM "OrderItem" AS oi
JOIN shard AS s ON s.product_id = oi."ProductID"
JOIN "Order" AS o ON o."ID" = oi."OrderID"
JOIN "ClientAgreement" AS ca ON ca."ID" = o."ClientAgreementID"
LEFT JOIN "Product" AS p ON p."ID" = oi."ProductID"
WHERE o."Created" >= %(start)s AND o."Created" < %(until)s
GROUP BY oi."ProductID", CAST(date_trunc('week', o."Created") AS date)
ORDER BY product_id, week_start
