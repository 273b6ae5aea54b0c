-- The order database the seeds read: clients, agreements, orders, order lines, products, events.
-- No foreign keys: the jobs read a database they do not own and must survive orphaned rows,
-- and bulk loads of tens of millions of lines stay fast.
IF OBJECT_ID(N'dbo.Client', N'U') IS NULL
CREATE TABLE dbo.Client (
    ID        bigint PRIMARY KEY,
    Name      nvarchar(200) NOT NULL,
    IsActive  bit NOT NULL DEFAULT 1,
    IsBlocked bit NOT NULL DEFAULT 0,
    Deleted   bit NOT NULL DEFAULT 0,
    Created   datetime2 NOT NULL,
    gender    nvarchar(1),
    age_group nvarchar(8),
    geo_id    int
);
IF OBJECT_ID(N'dbo.ClientAgreement', N'U') IS NULL
CREATE TABLE dbo.ClientAgreement (
    ID       bigint PRIMARY KEY,
    ClientID bigint NOT NULL
);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_clientagreement_client')
CREATE INDEX ix_clientagreement_client ON dbo.ClientAgreement (ClientID);
IF OBJECT_ID(N'dbo.Product', N'U') IS NULL
CREATE TABLE dbo.Product (
    ID               bigint PRIMARY KEY,
    Name             nvarchar(400) NOT NULL,
    Category         nvarchar(100),
    Brand            nvarchar(100),
    Price            float,
    Description      nvarchar(max),
    Created          datetime2 NOT NULL,
    popularity_score float NOT NULL DEFAULT 0
);
IF OBJECT_ID(N'dbo.[Order]', N'U') IS NULL
CREATE TABLE dbo.[Order] (
    ID                bigint PRIMARY KEY,
    ClientAgreementID bigint NOT NULL,
    Created           datetime2 NOT NULL
);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_order_created')
CREATE INDEX ix_order_created ON dbo.[Order] (Created);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_order_agreement')
CREATE INDEX ix_order_agreement ON dbo.[Order] (ClientAgreementID);
IF OBJECT_ID(N'dbo.OrderItem', N'U') IS NULL
CREATE TABLE dbo.OrderItem (
    ID        bigint PRIMARY KEY,
    OrderID   bigint NOT NULL,
    ProductID bigint,
    Quantity  float NOT NULL,
    Price     float
);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_orderitem_order')
CREATE INDEX ix_orderitem_order ON dbo.OrderItem (OrderID);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_orderitem_product')
CREATE INDEX ix_orderitem_product ON dbo.OrderItem (ProductID);
IF OBJECT_ID(N'dbo.events', N'U') IS NULL
CREATE TABLE dbo.events (
    id         bigint IDENTITY PRIMARY KEY,
    user_id    bigint NOT NULL,
    product_id bigint NOT NULL,
    event_type nvarchar(16) NOT NULL CHECK (event_type IN ('view', 'add_to_cart', 'purchase')),
    ts         datetime2 NOT NULL
);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_events_ts')
CREATE INDEX ix_events_ts ON dbo.events (ts);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_events_user')
CREATE INDEX ix_events_user ON dbo.events (user_id);
