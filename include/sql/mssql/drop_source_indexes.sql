-- Before a bulk reload of the source tables: their secondary indexes go, and the migrations
-- (IF NOT EXISTS ... CREATE INDEX) build them once afterwards, much faster than updating them row
-- by row through tens of millions of loaded lines.
DROP INDEX IF EXISTS ix_clientagreement_client ON dbo.ClientAgreement;
DROP INDEX IF EXISTS ix_order_created ON dbo.[Order];
DROP INDEX IF EXISTS ix_order_agreement ON dbo.[Order];
DROP INDEX IF EXISTS ix_orderitem_order ON dbo.OrderItem;
DROP INDEX IF EXISTS ix_orderitem_product ON dbo.OrderItem;
DROP INDEX IF EXISTS ix_events_ts ON dbo.events;
DROP INDEX IF EXISTS ix_events_user ON dbo.events;
