DELETE FROM [OrderItem];
DELETE FROM [Order];
DELETE FROM [ClientAgreement];
DELETE FROM [Client];
DELETE FROM [Product];
TRUNCATE TABLE [events];
