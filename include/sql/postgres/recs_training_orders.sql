-- Every order line since %(history_start)s and before %(until)s: the recommender's global state
-- (co-purchases, popularity, trends) is learnt from all customers, not only the active ones, and
-- from who bought what when: no quantities or prices, which would only fill memory.
SELECT ca."ClientID" AS customer_id, oi."ProductID" AS product_id, o."ID" AS order_id,
       o."Created" AS order_date, oi."ID" AS line_id
FROM "OrderItem" AS oi
JOIN "Order" AS o ON o."ID" = oi."OrderID"
JOIN "ClientAgreement" AS ca ON ca."ID" = o."ClientAgreementID"
WHERE o."Created" >= %(history_start)s AND o."Created" < %(until)s AND oi."ProductID" IS NOT NULL
  AND oi."Quantity" > 0 AND oi."Quantity" <= %(max_quantity)s  -- the source-row rules (source_bad_rows);
  -- duplicate lines go in the job (weekly_recs._orders): cheaper than a probe per line here
