-- WeeklyRecommendation holds every field of the `{week}:{customer_id}` document and the key's
-- expiry, so a restore rewrites keys identical to what publish wrote (seed 000: the table is the
-- fallback when Redis loses data).
IF NOT EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'dbo.WeeklyRecommendation') AND name = N'ProductName')
ALTER TABLE dbo.WeeklyRecommendation ADD ProductName nvarchar(400) NULL;
IF NOT EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'dbo.WeeklyRecommendation') AND name = N'Category')
ALTER TABLE dbo.WeeklyRecommendation ADD Category nvarchar(100) NULL;
IF NOT EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'dbo.WeeklyRecommendation') AND name = N'PredictedQuantity')
ALTER TABLE dbo.WeeklyRecommendation ADD PredictedQuantity float NULL;
IF NOT EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'dbo.WeeklyRecommendation') AND name = N'LastPurchased')
ALTER TABLE dbo.WeeklyRecommendation ADD LastPurchased date NULL;
IF NOT EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'dbo.WeeklyRecommendation') AND name = N'PurchaseFrequencyDays')
ALTER TABLE dbo.WeeklyRecommendation ADD PurchaseFrequencyDays float NULL;
IF NOT EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'dbo.WeeklyRecommendation') AND name = N'ExpiresAt')
ALTER TABLE dbo.WeeklyRecommendation ADD ExpiresAt datetime2 NULL;
