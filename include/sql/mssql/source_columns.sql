-- Schema pre-check: the columns of the source tables the event scoring jobs read.
SELECT table_name, column_name
FROM information_schema.columns
WHERE table_name IN ('events', 'Product', 'Client')
ORDER BY table_name, column_name
