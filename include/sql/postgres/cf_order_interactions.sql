-- cf_training: per customer and product the orders placed since %(since)s and before %(until)s,
-- split at %(cutoff)s into training (holdout 0) and the temporal holdout (holdout 1).
SELECT t.user_id, t.product_id, t.holdout, COUNT(DISTINCT t.order_id) AS n
FROM (
    SELECT ca."ClientID" AS user_id, oi."ProductID" AS product_id, o."ID" AS order_id,
           CASE WHEN o."Created" >= %(cutoff)s THEN 1 ELSE 0 END AS holdout
    FROM "OrderItem" AS oi
    JOIN "Order" AS o ON o."ID" = oi."OrderID"
    JOIN "ClientAgreement" AS ca ON ca."ID" = o."ClientAgreementID"
    WHERE o."Created" >= %(since)s AND o."Created" < %(until)s AND oi."ProductID" IS NOT NULL
) AS t
GROUP BY t.user_id, t.product_id, t.holdout
ORDER BY t.user_id, t.product_id, t.holdout
