-- The order database the seeds read: clients, agreements, orders, order lines, products, events.
-- No foreign keys: the jobs read a database they do not own and must survive orphaned rows,
-- and bulk loads of tens of millions of lines stay fast.
CREATE TABLE IF NOT EXISTS "Client" (
    "ID"        bigint PRIMARY KEY,
    "Name"      varchar(200) NOT NULL,
    "IsActive"  smallint NOT NULL DEFAULT 1,
    "IsBlocked" smallint NOT NULL DEFAULT 0,
    "Deleted"   smallint NOT NULL DEFAULT 0,
    "Created"   timestamp NOT NULL,
    gender      varchar(1),
    age_group   varchar(8),
    geo_id      integer
);
CREATE TABLE IF NOT EXISTS "ClientAgreement" (
    "ID"       bigint PRIMARY KEY,
    "ClientID" bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_clientagreement_client ON "ClientAgreement" ("ClientID");
CREATE TABLE IF NOT EXISTS "Product" (
    "ID"             bigint PRIMARY KEY,
    "Name"           varchar(400) NOT NULL,
    "Category"       varchar(100),
    "Brand"          varchar(100),
    "Price"          double precision,
    "Description"    text,
    "Created"        timestamp NOT NULL,
    popularity_score double precision NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS "Order" (
    "ID"                bigint PRIMARY KEY,
    "ClientAgreementID" bigint NOT NULL,
    "Created"           timestamp NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_order_created ON "Order" ("Created");
CREATE INDEX IF NOT EXISTS ix_order_agreement ON "Order" ("ClientAgreementID");
CREATE TABLE IF NOT EXISTS "OrderItem" (
    "ID"        bigint PRIMARY KEY,
    "OrderID"   bigint NOT NULL,
    "ProductID" bigint,
    "Quantity"  double precision NOT NULL,
    "Price"     double precision
);
CREATE INDEX IF NOT EXISTS ix_orderitem_order ON "OrderItem" ("OrderID");
CREATE INDEX IF NOT EXISTS ix_orderitem_product ON "OrderItem" ("ProductID");
CREATE TABLE IF NOT EXISTS events (
    id         bigserial PRIMARY KEY,
    user_id    bigint NOT NULL,
    product_id bigint NOT NULL,
    event_type varchar(16) NOT NULL CHECK (event_type IN ('view', 'add_to_cart', 'purchase')),
    ts         timestamp NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS ix_events_user ON events (user_id);
