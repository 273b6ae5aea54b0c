-- Order lines since %(history_start)s and before %(until)s of one shard's active customers (the rule
-- of active_customers) with IDs from %(first_customer)s to %(last_customer)s: a shard reads its
-- customers a part at a time, so its memory does not grow with the customers.
WITH active AS (
    SELECT c.ID AS customer_id
    FROM [Client] AS c
    WHERE c.IsActive = 1 AND c.IsBlocked = 0 AND c.Deleted = 0
      AND c.ID %% %(of)s = %(shard)s AND c.ID BETWEEN %(first_customer)s AND %(last_customer)s
      AND EXISTS (SELECT 1
                  FROM [ClientAgreement] AS ca
                  JOIN [Order] AS o ON o.ClientAgreementID = ca.ID
                  WHERE ca.ClientID = c.ID AND o.Created >= %(since)s AND o.Created < %(until)s)
)
SELECT a.customer_id, oi.ProductID AS product_id, o.ID AS order_id, o.Created AS order_date,
       oi.Quantity AS quantity, oi.ID AS line_id
FROM active AS a
JOIN [ClientAgreement] AS ca ON ca.ClientID = a.customer_id
JOIN [Order] AS o ON o.ClientAgreementID = ca.ID
JOIN [OrderItem] AS oi ON oi.OrderID = o.ID
WHERE o.Created >= %(history_start)s AND o.Created < %(until)s AND oi.ProductID IS NOT NULL
  AND oi.Quantity > 0 AND oi.Quantity <= %(max_quantity)s  -- the source-row rules (source_bad_rows);
  -- duplicate lines go in the job (weekly_recs._orders): cheaper than a probe per line here
ORDER BY a.customer_id, o.Created, oi.ID
