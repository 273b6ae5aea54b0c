-- Forecastable products of one shard: ordered since %(start)s and before %(until)s by at least
-- %(min_customers)s distinct customers in %(min_orders)s distinct orders; highest order count first.
WITH eligible AS (
    SELECT oi.ProductID AS product_id,
           COUNT(DISTINCT o.ID) AS orders,
           COUNT(DISTINCT ca.ClientID) AS customers,
           ROW_NUMBER() OVER (ORDER BY COUNT(DISTINCT o.ID) DESC, oi.ProductID) AS order_rank
    FROM [OrderItem] AS oi
    JOIN [Order] AS o ON o.ID = oi.OrderID
    JOIN [ClientAgreement] AS ca ON ca.ID = o.ClientAgreementID
    WHERE o.Created >= %(start)s AND o.Created < %(until)s AND oi.ProductID IS NOT NULL
    GROUP BY oi.ProductID
    HAVING COUNT(DISTINCT ca.ClientID) >= %(min_customers)s AND COUNT(DISTINCT o.ID) >= %(min_orders)s
)
SELECT product_id, orders, customers
FROM eligible
WHERE order_rank <= %(limit)s AND product_id %% %(of)s = %(shard)s
ORDER BY orders DESC, product_id
