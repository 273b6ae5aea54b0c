-- Weekly demand of one shard's forecastable products (the eligibility of forecast_products):
-- quantity and distinct customers per product and ISO week (Monday start; 1900-01-01 was a Monday).
WITH eligible AS (
    SELECT oi.ProductID AS product_id,
           ROW_NUMBER() OVER (ORDER BY COUNT(DISTINCT o.ID) DESC, oi.ProductID) AS order_rank
    FROM [OrderItem] AS oi
    JOIN [Order] AS o ON o.ID = oi.OrderID
    JOIN [ClientAgreement] AS ca ON ca.ID = o.ClientAgreementID
    WHERE o.Created >= %(start)s AND o.Created < %(until)s AND oi.ProductID IS NOT NULL
    GROUP BY oi.ProductID
    HAVING COUNT(DISTINCT ca.ClientID) >= %(min_customers)s AND COUNT(DISTINCT o.ID) >= %(min_orders)s
), shard AS (
    SELECT product_id FROM eligible WHERE order_rank <= %(limit)s AND product_id %% %(of)s = %(shard)s
), lines AS (
    SELECT oi.ProductID AS product_id,
           CAST(DATEADD(day, -(DATEDIFF(day, CAST('1900-01-01' AS date), CAST(o.Created AS date)) %% 7),
                        CAST(o.Created AS date)) AS date) AS week_start,
           oi.Quantity AS quantity,
           ca.ClientID AS customer_id
    FROM [OrderItem] AS oi
    JOIN shard AS s ON s.product_id = oi.ProductID
    JOIN [Order] AS o ON o.ID = oi.OrderID
    JOIN [ClientAgreement] AS ca ON ca.ID = o.ClientAgreementID
    WHERE o.Created >= %(start)s AND o.Created < %(until)s
)
SELECT l.product_id, l.week_start, SUM(l.quantity) AS quantity,
       COUNT(DISTINCT l.customer_id) AS customers, MAX(p.Category) AS category
FROM lines AS l
LEFT JOIN [Product] AS p ON p.ID = l.product_id
GROUP BY l.product_id, l.week_start
ORDER BY l.product_id, l.week_start
