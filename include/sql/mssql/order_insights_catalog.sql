-- What insights may suggest: per category bought in [%(since)s, %(until)s) its distinct buyers
-- and its best seller (most distinct buyers, then quantity, then lowest id); busiest category first.
WITH sales AS (
    SELECT p.Category AS category, oi.ProductID AS product_id,
           COUNT(DISTINCT ca.ClientID) AS buyers, SUM(oi.Quantity) AS quantity
    FROM [OrderItem] AS oi
    JOIN [Order] AS o ON o.ID = oi.OrderID
    JOIN [ClientAgreement] AS ca ON ca.ID = o.ClientAgreementID
    JOIN [Product] AS p ON p.ID = oi.ProductID
    WHERE o.Created >= %(since)s AND o.Created < %(until)s AND p.Category IS NOT NULL
      AND oi.Quantity > 0 AND oi.Quantity <= %(max_quantity)s  -- the source-row rules (source_bad_rows)
      AND NOT EXISTS (SELECT 1 FROM [OrderItem] AS twin WHERE twin.OrderID = oi.OrderID
                      AND twin.ProductID = oi.ProductID AND twin.ID < oi.ID)
    GROUP BY p.Category, oi.ProductID
), ranked AS (
    SELECT category, product_id, buyers,
           ROW_NUMBER() OVER (PARTITION BY category ORDER BY buyers DESC, quantity DESC, product_id) AS product_rank
    FROM sales
), categories AS (
    SELECT p.Category AS category, COUNT(DISTINCT ca.ClientID) AS category_buyers
    FROM [OrderItem] AS oi
    JOIN [Order] AS o ON o.ID = oi.OrderID
    JOIN [ClientAgreement] AS ca ON ca.ID = o.ClientAgreementID
    JOIN [Product] AS p ON p.ID = oi.ProductID
    WHERE o.Created >= %(since)s AND o.Created < %(until)s AND p.Category IS NOT NULL
      AND oi.Quantity > 0 AND oi.Quantity <= %(max_quantity)s  -- the source-row rules (source_bad_rows)
      AND NOT EXISTS (SELECT 1 FROM [OrderItem] AS twin WHERE twin.OrderID = oi.OrderID
                      AND twin.ProductID = oi.ProductID AND twin.ID < oi.ID)
    GROUP BY p.Category
)
SELECT c.category, c.category_buyers, r.product_id, p.Name AS product_name,
       CAST(p.Price AS decimal(18, 2)) AS price, r.buyers AS product_buyers
FROM categories AS c
JOIN ranked AS r ON r.category = c.category AND r.product_rank = 1
JOIN [Product] AS p ON p.ID = r.product_id
ORDER BY c.category_buyers DESC, c.category
