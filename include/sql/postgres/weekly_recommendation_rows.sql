-- One shard's rows of one week with every document field and the keys' expiry (restore).
SELECT "CustomerID", "Week", "ProductID", "Rank", "Score", "Source", "GeneratedAt", "ProductName",
       "Category", "PredictedQuantity", "LastPurchased", "PurchaseFrequencyDays", "ExpiresAt"
FROM "WeeklyRecommendation"
WHERE "Week" = %(week)s AND "CustomerID" %% %(of)s = %(shard)s
ORDER BY "CustomerID", "Rank"
