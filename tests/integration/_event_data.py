"""Small event sets loaded straight into the source tables, for the event scoring tests."""
from __future__ import annotations

import pandas as pd

from include.runtime.bulk_writer import BulkWriter


def load_events(database, products: pd.DataFrame, customers: pd.DataFrame, events: pd.DataFrame) -> None:
    """Replace Client, Product and events with these frames (DESIGN columns)."""
    database.execute("truncate_source")
    writer = BulkWriter(database)
    writer.load("Client", pd.DataFrame({
        "ID": customers["customer_id"], "Name": "c" + customers["customer_id"].astype(str), "IsActive": 1,
        "IsBlocked": 0, "Deleted": 0, "Created": pd.Timestamp("2020-01-01"), "gender": customers["gender"],
        "age_group": customers["age_group"], "geo_id": customers["geo_id"].astype("Int64")}))
    writer.load("Product", pd.DataFrame({
        "ID": products["product_id"], "Name": "p" + products["product_id"].astype(str),
        "Category": products["category"], "Brand": products["brand"], "Price": products["price"],
        "Description": "", "Created": pd.Timestamp("2020-01-01")}))
    writer.load("events", events[["user_id", "product_id", "event_type", "ts"]])
    with database.conn.cursor() as cur:
        cur.execute("DELETE FROM user_category_affinity; DELETE FROM user_profiles; DELETE FROM job_watermark; "
                    "DELETE FROM user_affinity_recompute; DELETE FROM popular_items")
    database.conn.commit()


def scores(database) -> dict[int, float]:
    with database.conn.cursor() as cur:
        cur.execute('SELECT "ID", popularity_score FROM "Product" ORDER BY "ID"')
        rows = cur.fetchall()
    database.conn.commit()
    return {int(k): float(v) for k, v in rows}


def set_scores(database, value: float) -> None:
    with database.conn.cursor() as cur:
        cur.execute('UPDATE "Product" SET popularity_score = %s', (value,))
    database.conn.commit()
