"""Loaders: the synthetic generator and the Online Retail importer, into real PostgreSQL."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from include.datasets.online_retail import product_id_of, read_online_retail
from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate

ONLINE_RETAIL = Path(__file__).resolve().parents[3] / "shared" / "data" / "online_retail.parquet"


def test_synthetic_is_deterministic_and_structured():
    a, b = generate(customers=300, products=80, seed=7), generate(customers=300, products=80, seed=7)
    pd.testing.assert_frame_equal(a.orders, b.orders)
    assert not a.orders.equals(generate(customers=300, products=80, seed=8).orders)
    orders = a.orders
    # repeat cycles: most customer-product pairs with 3+ purchases recur
    pair_counts = orders.groupby(["customer_id", "product_id"]).size()
    assert (pair_counts >= 3).sum() > 100
    # new products sell only after creation
    created = a.products.set_index("product_id")["created_at"]
    assert (orders["order_date"] >= orders["product_id"].map(created).dt.normalize()).all()
    # yearly seasonality: November busier than March
    by_month = orders.groupby(orders["order_date"].dt.month).size()
    assert by_month[11] > 1.3 * by_month[3]
    # Zipf popularity: the top 10% of products take a large share of lines
    share = orders["product_id"].value_counts().iloc[:8].sum() / len(orders)
    assert share > 0.2
    assert set(a.events["event_type"]) == {"view", "add_to_cart", "purchase"}
    assert a.customers["is_blocked"].sum() + a.customers["deleted"].sum() > 0


def test_product_ids_of_stock_codes():
    assert product_id_of("85123A") == 85123 * 1000 + 27
    assert product_id_of("85123a") == product_id_of("85123A")
    assert product_id_of("15056BL") == 15056 * 1000 + 2 * 27 + 12
    assert product_id_of("22423") == 22423000
    for fee in ("POST", "M", "DOT", "BANK CHARGES", "gift_0001_10", "C2"):
        assert product_id_of(fee) is None


def test_online_retail_quirks_are_counted(tmp_path):
    raw = pd.DataFrame({
        "InvoiceNo": ["1", "1", "C2", "3", "4", "5", "6"],
        "StockCode": ["85123A", "22423", "22423", "POST", "22423", "22423", "22424"],
        "Description": ["HEART HOLDER", None, "CAKE STAND", "POSTAGE", "CAKE STAND", "CAKE STAND", "BIG MUG"],
        "Quantity": [6, 2, -2, 1, 0, 3, 1],
        "InvoiceDate": ["2011-01-03 10:00:00"] * 7,
        "UnitPrice": [2.5, 10.0, 10.0, 18.0, 10.0, 0.0, 1.0],
        "CustomerID": [17850.0, 17850.0, 17850.0, 17850.0, 12000.0, 12000.0, np.nan],
        "Country": ["United Kingdom"] * 7,
    })
    path = tmp_path / "retail.csv"
    raw.to_csv(path, index=False)
    data = read_online_retail(path)
    assert data.report == {"rows_read": 7, "skipped_no_customer": 1, "skipped_cancellation": 1,
                           "skipped_non_positive_quantity": 1, "skipped_non_positive_price": 1,
                           "skipped_non_product_code": 1, "rows_kept": 2, "products": 2, "customers": 1}
    assert data.products.set_index("product_id").loc[22423000, "name"] == "product 22423000"


def test_online_retail_refuses_other_columns(tmp_path):
    path = tmp_path / "other.csv"
    pd.DataFrame({"a": [1]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="UCI Online Retail columns"):
        read_online_retail(path)


@pytest.mark.skipif(not ONLINE_RETAIL.exists(), reason="shared/data is not beside the project")
def test_online_retail_real_file_loads_into_postgres(database):
    data = read_online_retail(ONLINE_RETAIL)
    assert data.report["rows_read"] == 541_909
    assert data.report["skipped_no_customer"] == 135_080
    assert data.report["rows_kept"] == len(data.orders) > 390_000
    written = load_source(database, data.orders.iloc[:20000], data.products, data.customers)
    assert written["OrderItem"] == 20000


def test_synthetic_loads_into_postgres(database):
    data = generate(customers=200, products=50, seed=1)
    written = load_source(database, data.orders, data.products, data.customers, data.events)
    assert written["OrderItem"] == len(data.orders)
    assert database.scalar("count_order_items") == len(data.orders)


def test_a_reload_builds_the_source_indexes_again(database):
    """load_source drops the source tables' secondary indexes for the COPY and rebuilds them."""
    def indexes() -> set[str]:
        with database.conn.cursor() as cur:
            cur.execute("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'ix\\_%%' AND tablename IN "
                        "('ClientAgreement', 'Order', 'OrderItem', 'events')")
            found = {row[0] for row in cur.fetchall()}
        database.conn.commit()
        return found

    expected = {"ix_clientagreement_client", "ix_order_created", "ix_order_agreement", "ix_orderitem_order",
                "ix_orderitem_product", "ix_events_ts", "ix_events_user"}
    assert indexes() == expected
    data = generate(customers=50, products=20, seed=2)
    with database.conn.cursor() as cur:
        cur.execute(database.sql("drop_source_indexes"))
    database.conn.commit()
    assert indexes() == set()
    load_source(database, data.orders, data.products, data.customers, data.events)
    assert indexes() == expected
