-- The customers of one shard that hold rows of one week (publish unlinks the keys of those the
-- new run no longer recommends to).
SELECT DISTINCT "CustomerID" AS customer_id
FROM "WeeklyRecommendation"
WHERE "Week" = %(week)s AND "CustomerID" %% %(of)s = %(shard)s
