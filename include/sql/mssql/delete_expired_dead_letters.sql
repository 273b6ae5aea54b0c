-- One batch of dead letters past their retention: at most %(batch)s rows per statement, so a
-- large backlog never holds a long lock.
DELETE FROM [dead_letter]
WHERE id IN (SELECT TOP (%(batch)s) id FROM [dead_letter] WHERE created_at < %(before)s ORDER BY id)
