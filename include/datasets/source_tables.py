"""Writes DESIGN frames (orders, products, customers, events) into the seeds' order schema.

One loader serves the synthetic generator and the Online Retail importer: each client gets
one agreement (ID = client ID), each order its lines, all through bulk COPY into tables whose
secondary indexes are built after the load.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from include.runtime.bulk_writer import BulkWriter
from include.runtime.database import Database
from include.runtime.schema import migrate

log = logging.getLogger(__name__)

# The seeds' order schema, as loaded here; every other table of the database is an output.
SOURCE_TABLES = ("Client", "ClientAgreement", "Order", "OrderItem", "Product", "events")

# Which source tables exist, without creating any; their rows are then counted one table at a time
# (names from SOURCE_TABLES only, quoted per dialect).
_EXISTING = {
    "postgres": ("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                 "AND table_type = 'BASE TABLE'"),
    "mssql": "SELECT name FROM sys.tables WHERE schema_id = SCHEMA_ID()",
}
_DATABASE_NAME = {"postgres": "SELECT current_database()", "mssql": "SELECT DB_NAME()"}


def source_row_counts(db: Database) -> tuple[str, dict[str, int]]:
    """The database's name and the rows each existing source table holds: what `load_source`
    would delete. The loader CLI checks it before it replaces anything."""
    quote = (lambda t: f"[{t}]") if db.dialect == "mssql" else (lambda t: f'"{t}"')
    with db.conn.cursor() as cur:
        cur.execute(_DATABASE_NAME[db.dialect])
        name = cur.fetchone()[0]
        cur.execute(_EXISTING[db.dialect])
        existing = {row[0] for row in cur.fetchall()}
        counts = {}
        for table in SOURCE_TABLES:
            if table in existing:
                cur.execute(f"SELECT count(*) FROM {quote(table)}")  # noqa: S608 - a name from SOURCE_TABLES
                counts[table] = int(cur.fetchone()[0])
    db.conn.commit()
    return name, counts


def load_source(db: Database, orders: pd.DataFrame, products: pd.DataFrame,
                customers: pd.DataFrame | None = None, events: pd.DataFrame | None = None) -> dict[str, int]:
    """Replace the source tables' contents with these frames; rows written per table."""
    if customers is None:
        customers = pd.DataFrame({"customer_id": np.sort(orders["customer_id"].unique())})
    first_order = orders.groupby("customer_id")["order_date"].min()
    created = customers["customer_id"].map(first_order) - pd.Timedelta(days=1)
    if "created_at" in customers:
        created = customers["created_at"].fillna(created)
    clients = pd.DataFrame({
        "ID": customers["customer_id"].to_numpy(),
        "Name": "Customer " + customers["customer_id"].astype(str),
        "IsActive": customers.get("is_active", 1),
        "IsBlocked": customers.get("is_blocked", 0),
        "Deleted": customers.get("deleted", 0),
        "Created": created.fillna(pd.Timestamp("2000-01-01")).to_numpy(),
        "gender": customers.get("gender"),
        "age_group": customers.get("age_group"),
        "geo_id": customers.get("geo_id"),
    })
    order_heads = orders.groupby("order_id", sort=True).agg(customer_id=("customer_id", "first"),
                                                            order_date=("order_date", "min")).reset_index()
    tables = {
        "Client": clients,
        "ClientAgreement": pd.DataFrame({"ID": clients["ID"], "ClientID": clients["ID"]}),
        "Product": pd.DataFrame({
            "ID": products["product_id"].to_numpy(), "Name": products["name"].to_numpy(),
            "Category": products["category"].to_numpy(), "Brand": products["brand"].to_numpy(),
            "Price": products["price"].to_numpy(), "Description": products["description"].to_numpy(),
            "Created": products["created_at"].to_numpy()}),
        "Order": pd.DataFrame({"ID": order_heads["order_id"], "ClientAgreementID": order_heads["customer_id"],
                               "Created": order_heads["order_date"]}),
        "OrderItem": pd.DataFrame({
            "ID": np.arange(1, len(orders) + 1, dtype=np.int64), "OrderID": orders["order_id"].to_numpy(),
            "ProductID": orders["product_id"].to_numpy(), "Quantity": orders["quantity"].to_numpy(),
            "Price": orders["price"].to_numpy()}),
        "events": events if events is not None else pd.DataFrame(columns=["user_id", "product_id", "event_type", "ts"]),
    }
    db.execute("truncate_source")
    db.execute("drop_source_indexes")
    writer = BulkWriter(db)
    written = {table: writer.load(table, frame) for table, frame in tables.items()}
    migrate(db)  # builds the dropped indexes again, once
    log.info("source tables loaded: %s", written)
    return written
