-- Forecastable products: ordered since %(start)s and before %(until)s by at least
-- %(min_customers)s distinct customers in %(min_orders)s distinct orders; highest order count first.
SELECT oi."ProductID" AS product_id,
       count(DISTINCT o."ID") AS orders,
       count(DISTINCT ca."ClientID") AS customers
FROM "OrderItem" AS oi
JOIN "Order" AS o ON o."ID" = oi."OrderID"
JOIN "ClientAgreement" AS ca ON ca."ID" = o."ClientAgreementID"
WHERE o."Created" >= %(start)s AND o."Created" < %(until)s AND oi."ProductID" IS NOT NULL
  AND oi."Quantity" > 0 AND oi."Quantity" <= %(max_quantity)s  -- the source-row rules (source_bad_rows)
  AND NOT EXISTS (SELECT 1 FROM "OrderItem" AS twin WHERE twin."OrderID" = oi."OrderID"
                  AND twin."ProductID" = oi."ProductID" AND twin."ID" < oi."ID")
GROUP BY oi."ProductID"
HAVING count(DISTINCT ca."ClientID") >= %(min_customers)s AND count(DISTINCT o."ID") >= %(min_orders)s
ORDER BY orders DESC, product_id
