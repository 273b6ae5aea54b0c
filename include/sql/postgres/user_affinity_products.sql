-- What user_affinity needs of every product: its category and brand (the labels scored) and price.
SELECT p."ID" AS product_id, p."Category" AS category, p."Brand" AS brand, p."Price" AS price
FROM "Product" AS p
