-- Active customers of one shard (ID modulo `of` = `shard`): an order since %(since)s and before
-- %(until)s, IsActive = 1, IsBlocked = 0, Deleted = 0; a `limit` arrives as the highest ID kept.
SELECT c.ID AS customer_id
FROM [Client] AS c
WHERE c.IsActive = 1 AND c.IsBlocked = 0 AND c.Deleted = 0
  AND c.ID %% %(of)s = %(shard)s AND c.ID <= %(max_customer)s
  AND EXISTS (SELECT 1
              FROM [ClientAgreement] AS ca
              JOIN [Order] AS o ON o.ClientAgreementID = ca.ID
              WHERE ca.ClientID = c.ID AND o.Created >= %(since)s AND o.Created < %(until)s)
ORDER BY c.ID
