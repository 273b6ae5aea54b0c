-- How week %(week)s's recommendations did: orders placed since %(since)s and before %(until)s by
-- the customers who got them; distinct products bought and how many of them were recommended.
WITH recommended AS (
    SELECT CustomerID AS customer_id, ProductID AS product_id
    FROM [WeeklyRecommendation]
    WHERE Week = %(week)s
), bought AS (
    SELECT DISTINCT ca.ClientID AS customer_id, oi.ProductID AS product_id
    FROM [OrderItem] AS oi
    JOIN [Order] AS o ON o.ID = oi.OrderID
    JOIN [ClientAgreement] AS ca ON ca.ID = o.ClientAgreementID
    WHERE o.Created >= %(since)s AND o.Created < %(until)s
      AND ca.ClientID IN (SELECT customer_id FROM recommended)
), per_customer AS (
    SELECT b.customer_id, COUNT(*) AS bought, COUNT(r.product_id) AS hits
    FROM bought AS b
    LEFT JOIN recommended AS r ON r.customer_id = b.customer_id AND r.product_id = b.product_id
    GROUP BY b.customer_id
)
SELECT (SELECT COUNT(DISTINCT customer_id) FROM recommended) AS customers_recommended,
       COUNT(*) AS customers_ordered,
       COALESCE(SUM(CASE WHEN hits > 0 THEN 1 ELSE 0 END), 0) AS customers_hit,
       COALESCE(SUM(bought), 0) AS products_bought,
       COALESCE(SUM(hits), 0) AS products_hit
FROM per_customer
