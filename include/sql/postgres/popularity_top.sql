-- The top products by popularity_score, globally and per category (the job skips scores of 0).
WITH ranked AS (
    SELECT "ID" AS product_id, "Category" AS category, popularity_score AS score,
           ROW_NUMBER() OVER (ORDER BY popularity_score DESC, "ID") AS global_rank,
           ROW_NUMBER() OVER (PARTITION BY "Category" ORDER BY popularity_score DESC, "ID") AS category_rank
    FROM "Product"
)
SELECT product_id, category, score, global_rank, category_rank
FROM ranked
WHERE global_rank <= %(top_n)s OR category_rank <= %(top_n)s
ORDER BY global_rank
