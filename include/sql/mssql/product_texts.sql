-- faiss_rebuild: every product's text fields, the input of its embedding.
SELECT p.ID AS product_id, p.Name AS name, p.Category AS category, p.Brand AS brand,
       p.Description AS description
FROM [Product] AS p
ORDER BY p.ID
