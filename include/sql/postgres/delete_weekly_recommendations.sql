-- A shard's rows of one week: customers whose ID modulo `of` is `shard`.
DELETE FROM "WeeklyRecommendation"
WHERE "Week" = %(week)s AND "CustomerID" %% %(of)s = %(shard)s
