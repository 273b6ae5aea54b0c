-- Before a bulk reload of the source tables: their secondary indexes go, and the migrations
-- (CREATE INDEX IF NOT EXISTS) build them once afterwards, much faster than updating them row by
-- row through tens of millions of COPYed lines.
DROP INDEX IF EXISTS ix_clientagreement_client;
DROP INDEX IF EXISTS ix_order_created;
DROP INDEX IF EXISTS ix_order_agreement;
DROP INDEX IF EXISTS ix_orderitem_order;
DROP INDEX IF EXISTS ix_orderitem_product;
DROP INDEX IF EXISTS ix_events_ts;
DROP INDEX IF EXISTS ix_events_user;
