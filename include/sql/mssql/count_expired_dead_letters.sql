-- Dead letters past their retention (maintenance dry run): created before %(before)s.
SELECT count(*) AS expired FROM [dead_letter] WHERE created_at < %(before)s
