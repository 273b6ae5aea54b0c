-- Insight users: active clients (not blocked, not deleted) with at least %(min_orders)s orders in
-- [%(since)s, %(until)s), most orders first, at most %(limit)s. plan counts them.
WITH eligible AS (
    SELECT ca."ClientID" AS customer_id,
           count(DISTINCT o."ID") AS orders,
           row_number() OVER (ORDER BY count(DISTINCT o."ID") DESC, ca."ClientID") AS order_rank
    FROM "Order" AS o
    JOIN "ClientAgreement" AS ca ON ca."ID" = o."ClientAgreementID"
    JOIN "Client" AS c ON c."ID" = ca."ClientID"
    WHERE o."Created" >= %(since)s AND o."Created" < %(until)s
      AND c."IsActive" = 1 AND c."IsBlocked" = 0 AND c."Deleted" = 0
    GROUP BY ca."ClientID"
    HAVING count(DISTINCT o."ID") >= %(min_orders)s
)
SELECT count(*) AS users, COALESCE(sum(orders), 0) AS orders
FROM eligible
WHERE order_rank <= %(limit)s
