-- WeeklyRecommendation holds every field of the `{week}:{customer_id}` document and the key's
-- expiry, so a restore rewrites keys identical to what publish wrote (seed 000: the table is the
-- fallback when Redis loses data).
ALTER TABLE "WeeklyRecommendation" ADD COLUMN IF NOT EXISTS "ProductName" varchar(400);
ALTER TABLE "WeeklyRecommendation" ADD COLUMN IF NOT EXISTS "Category" varchar(100);
ALTER TABLE "WeeklyRecommendation" ADD COLUMN IF NOT EXISTS "PredictedQuantity" double precision;
ALTER TABLE "WeeklyRecommendation" ADD COLUMN IF NOT EXISTS "LastPurchased" date;
ALTER TABLE "WeeklyRecommendation" ADD COLUMN IF NOT EXISTS "PurchaseFrequencyDays" double precision;
ALTER TABLE "WeeklyRecommendation" ADD COLUMN IF NOT EXISTS "ExpiresAt" timestamp;
