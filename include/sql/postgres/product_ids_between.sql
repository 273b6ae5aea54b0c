-- Product IDs in [%(low)s, %(high)s]: a backfill checks that the IDs it was given exist.
SELECT "ID" AS id
FROM "Product"
WHERE "ID" BETWEEN %(low)s AND %(high)s
ORDER BY "ID"
