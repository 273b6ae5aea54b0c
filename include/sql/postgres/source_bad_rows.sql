-- Order lines that break the source-row rules of include/runtime/source_quality.py: in the
-- window [%(start)s, %(until)s), dated after %(future_after)s, or orphaned (no order). One reason per line, the first that applies; at most %(max_rows)s lines per reason,
-- with reason_rows counting them all. The jobs' queries exclude the same lines.
WITH lines AS (
    SELECT oi."ID" AS item_id, oi."OrderID" AS order_id, ca."ClientID" AS customer_id,
           oi."ProductID" AS product_id, o."Created" AS order_date, oi."Quantity" AS quantity,
           oi."Price" AS price,
           row_number() OVER (PARTITION BY oi."OrderID", oi."ProductID" ORDER BY oi."ID") AS line_copy
    FROM "OrderItem" AS oi
    LEFT JOIN "Order" AS o ON o."ID" = oi."OrderID"
    LEFT JOIN "ClientAgreement" AS ca ON ca."ID" = o."ClientAgreementID"
    WHERE (o."ID" IS NULL OR (o."Created" >= %(start)s AND o."Created" < %(until)s)
           OR o."Created" > %(future_after)s)
), classified AS (
    SELECT item_id, order_id, customer_id, product_id, order_date, quantity, price,
           CASE WHEN order_date IS NULL OR customer_id IS NULL OR product_id IS NULL THEN 'null_id'
                WHEN order_date > %(future_after)s THEN 'future_date'
                WHEN quantity <= 0 THEN 'non_positive_quantity'
                WHEN quantity > %(max_quantity)s THEN 'absurd_quantity'
                WHEN line_copy > 1 THEN 'duplicate_line'
           END AS reason
    FROM lines
), ranked AS (
    SELECT reason, item_id, order_id, customer_id, product_id, order_date, quantity, price,
           count(*) OVER (PARTITION BY reason) AS reason_rows,
           row_number() OVER (PARTITION BY reason ORDER BY item_id) AS reason_rank
    FROM classified
    WHERE reason IS NOT NULL
)
SELECT reason, reason_rows, item_id, order_id, customer_id, product_id, order_date, quantity, price
FROM ranked
WHERE reason_rank <= %(max_rows)s
ORDER BY reason, item_id
