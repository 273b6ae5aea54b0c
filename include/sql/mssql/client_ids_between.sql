-- Client (customer / user) IDs in [%(low)s, %(high)s]: a backfill checks that the IDs it was given exist.
SELECT [ID] AS id
FROM [Client]
WHERE [ID] BETWEEN %(low)s AND %(high)s
ORDER BY [ID]
