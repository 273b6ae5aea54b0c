-- The orderable catalogue, created before %(until)s.
SELECT p."ID" AS product_id, p."Name" AS name, p."Category" AS category, p."Brand" AS brand,
       p."Price" AS price, p."Created" AS created_at
FROM "Product" AS p
WHERE p."Created" < %(until)s
ORDER BY p."ID"
