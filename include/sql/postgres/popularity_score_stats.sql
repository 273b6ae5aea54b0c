-- Post-check of popularity (run inside the scoring transaction): counts and ranges of the scores.
-- NaN sorts above every number in PostgreSQL, so "above 1e300" counts NaN and infinity too.
SELECT COUNT(*) AS products,
       SUM(CASE WHEN popularity_score > 0 THEN 1 ELSE 0 END) AS scored,
       SUM(CASE WHEN popularity_score < 0 OR popularity_score > 1e300 THEN 1 ELSE 0 END) AS out_of_range,
       MIN(popularity_score) AS min_score,
       MAX(CASE WHEN popularity_score > 1e300 THEN 0 ELSE popularity_score END) AS max_score
FROM "Product"
