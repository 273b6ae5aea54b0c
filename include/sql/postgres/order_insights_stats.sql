-- Order statistics of one shard's insight users (the eligibility of order_insights_users, and
-- customer_id %% %(of)s = %(shard)s), over the orders in [%(since)s, %(until)s): one row per user
-- and category bought, the user's totals repeated on each. Gaps between consecutive order days
-- come as integer sums (count, sum, sum of squares) so both dialects agree exactly; the model
-- derives mean and spread from them.
WITH eligible AS (
    SELECT ca."ClientID" AS customer_id,
           row_number() OVER (ORDER BY count(DISTINCT o."ID") DESC, ca."ClientID") AS order_rank
    FROM "Order" AS o
    JOIN "ClientAgreement" AS ca ON ca."ID" = o."ClientAgreementID"
    JOIN "Client" AS c ON c."ID" = ca."ClientID"
    WHERE o."Created" >= %(since)s AND o."Created" < %(until)s
      AND c."IsActive" = 1 AND c."IsBlocked" = 0 AND c."Deleted" = 0
    GROUP BY ca."ClientID"
    HAVING count(DISTINCT o."ID") >= %(min_orders)s
), shard AS (
    SELECT customer_id FROM eligible WHERE order_rank <= %(limit)s AND customer_id %% %(of)s = %(shard)s
), orders AS (
    SELECT s.customer_id, o."ID" AS order_id, CAST(o."Created" AS date) AS order_day,
           CAST(lag(o."Created") OVER (PARTITION BY s.customer_id ORDER BY o."Created", o."ID") AS date) AS previous_day
    FROM shard AS s
    JOIN "ClientAgreement" AS ca ON ca."ClientID" = s.customer_id
    JOIN "Order" AS o ON o."ClientAgreementID" = ca."ID"
    WHERE o."Created" >= %(since)s AND o."Created" < %(until)s
), rhythm AS (
    SELECT customer_id, count(*) AS orders, max(order_day) AS last_order,
           count(previous_day) AS gaps,
           COALESCE(sum(order_day - previous_day), 0) AS gap_days_sum,
           COALESCE(sum((order_day - previous_day) * (order_day - previous_day)), 0) AS gap_days_sq_sum
    FROM orders
    GROUP BY customer_id
), lines AS (
    SELECT od.customer_id, od.order_id, oi."ProductID" AS product_id,
           COALESCE(p."Category", 'uncategorised') AS category, oi."Quantity" AS quantity,
           oi."Quantity" * COALESCE(oi."Price", p."Price", 0) AS spend
    FROM orders AS od
    JOIN "OrderItem" AS oi ON oi."OrderID" = od.order_id
    LEFT JOIN "Product" AS p ON p."ID" = oi."ProductID"
    WHERE oi."ProductID" IS NOT NULL
      AND oi."Quantity" > 0 AND oi."Quantity" <= %(max_quantity)s  -- the source-row rules (source_bad_rows)
      AND NOT EXISTS (SELECT 1 FROM "OrderItem" AS twin WHERE twin."OrderID" = oi."OrderID"
                      AND twin."ProductID" = oi."ProductID" AND twin."ID" < oi."ID")
), totals AS (
    SELECT customer_id, sum(spend) AS spend, sum(quantity) AS items,
           count(DISTINCT product_id) AS products, count(DISTINCT category) AS categories
    FROM lines
    GROUP BY customer_id
), by_category AS (
    SELECT customer_id, category, count(DISTINCT order_id) AS category_orders,
           sum(quantity) AS category_items, sum(spend) AS category_spend
    FROM lines
    GROUP BY customer_id, category
)
SELECT r.customer_id, r.orders, CAST(t.spend AS decimal(18, 2)) AS spend, CAST(t.items AS decimal(18, 2)) AS items,
       t.products, t.categories, CAST(%(as_of)s AS date) - r.last_order AS days_since_last_order,
       r.gaps, r.gap_days_sum, r.gap_days_sq_sum,
       b.category, b.category_orders, CAST(b.category_items AS decimal(18, 2)) AS category_items,
       CAST(b.category_spend AS decimal(18, 2)) AS category_spend
FROM rhythm AS r
JOIN totals AS t ON t.customer_id = r.customer_id
JOIN by_category AS b ON b.customer_id = r.customer_id
ORDER BY r.customer_id, b.category
