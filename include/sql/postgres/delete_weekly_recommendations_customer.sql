-- One customer's rows of one week (a backfill for given customers replaces only theirs).
DELETE FROM "WeeklyRecommendation"
WHERE "Week" = %(week)s AND "CustomerID" = %(customer_id)s
