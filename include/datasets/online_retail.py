"""Reader of the UCI Online Retail format into the frames of DESIGN.md.

The file is real order data with real quirks. Each quirk is handled by one rule and every
dropped row is counted under its reason, so an evaluation can say exactly what it ran on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
           "CustomerID", "Country"]
# A product code is five digits and an optional variant suffix of up to two letters
# (85123A, 15056BL); POST, M, DOT, BANK CHARGES, gift_0001_10 ... are fees and adjustments.
_PRODUCT_CODE = re.compile(r"^(\d{5})([A-Z]{0,2})$")
_MIN_CATEGORY_PRODUCTS = 5


@dataclass
class OnlineRetail:
    orders: pd.DataFrame
    products: pd.DataFrame
    customers: pd.DataFrame
    report: dict[str, int] = field(default_factory=dict)


def product_id_of(stock_code: str) -> int | None:
    """Stable integer id of a StockCode: digits * 1000 + the suffix letters in base 27."""
    match = _PRODUCT_CODE.match(stock_code.strip().upper())
    if match is None:
        return None
    digits, suffix = match.groups()
    letters = [ord(c) - 64 for c in suffix] + [0, 0]
    return int(digits) * 1000 + letters[0] * 27 + letters[1]


def read_online_retail(path: str | Path) -> OnlineRetail:
    """Read a parquet or CSV file with the UCI Online Retail columns.

    Dropped, each counted in `report`: rows without a customer, cancellations (InvoiceNo
    starting with C), non-positive quantities or prices, and non-product stock codes.
    A product's name is its most frequent description; its category is the last word of
    that name (the noun: HOLDER, MUG, BAG), with rare ones pooled as OTHER.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        raw = pd.read_parquet(path)
    elif path.suffix in (".csv", ".gz"):
        raw = pd.read_csv(path, dtype={"InvoiceNo": str, "StockCode": str})
    else:
        raise ValueError(f"expected a .parquet or .csv file in the UCI Online Retail columns, got {path}")
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{path} lacks the UCI Online Retail columns {missing}; it has {list(raw.columns)}")

    report = {"rows_read": len(raw)}
    invoice = raw["InvoiceNo"].astype(str).str.strip()
    code = raw["StockCode"].astype(str).str.strip().str.upper()
    product_id = code.map(lambda c: product_id_of(c) if c else None)
    rules = {
        "no_customer": raw["CustomerID"].isna(),
        "cancellation": invoice.str.startswith("C"),
        "non_positive_quantity": raw["Quantity"] <= 0,
        "non_positive_price": raw["UnitPrice"] <= 0,
        "non_product_code": product_id.isna(),
    }
    dropped = pd.Series(False, index=raw.index)
    for reason, mask in rules.items():
        report[f"skipped_{reason}"] = int((mask & ~dropped).sum())
        dropped |= mask
    keep = ~dropped
    report["rows_kept"] = int(keep.sum())

    orders = pd.DataFrame({
        "customer_id": raw.loc[keep, "CustomerID"].astype("int64").to_numpy(),
        "product_id": product_id[keep].astype("int64").to_numpy(),
        "order_id": pd.to_numeric(invoice[keep], errors="coerce").astype("int64").to_numpy(),
        "order_date": pd.to_datetime(raw.loc[keep, "InvoiceDate"]).astype("datetime64[us]").to_numpy(),
        "quantity": raw.loc[keep, "Quantity"].astype("float64").to_numpy(),
        "price": raw.loc[keep, "UnitPrice"].astype("float64").to_numpy(),
    })
    products = _products(orders, raw.loc[keep, "Description"].to_numpy())
    report["products"] = len(products)
    report["customers"] = int(orders["customer_id"].nunique())
    countries = raw.loc[keep, ["CustomerID", "Country"]].drop_duplicates("CustomerID")
    customers = pd.DataFrame({
        "customer_id": countries["CustomerID"].astype("int64").to_numpy(),
        "country": countries["Country"].astype(str).to_numpy(),
    })
    return OnlineRetail(orders=orders, products=products, customers=customers, report=report)


def _products(orders: pd.DataFrame, descriptions: np.ndarray) -> pd.DataFrame:
    lines = pd.DataFrame({"product_id": orders["product_id"].to_numpy(),
                          "description": pd.Series(descriptions).fillna("").str.strip().to_numpy()})
    named = lines[lines["description"] != ""]
    name = (named.groupby(["product_id", "description"]).size().rename("n").reset_index()
            .sort_values(["product_id", "n"], ascending=[True, False])
            .drop_duplicates("product_id").set_index("product_id")["description"])
    stats = orders.groupby("product_id").agg(price=("price", "median"), created_at=("order_date", "min"))
    products = stats.join(name.rename("name")).reset_index()
    products["name"] = products["name"].fillna("product " + products["product_id"].astype(str))
    noun = products["name"].str.upper().str.extract(r"([A-Z]+)\W*$")[0].fillna("OTHER")
    counts = noun.map(noun.value_counts())
    products["category"] = noun.where(counts >= _MIN_CATEGORY_PRODUCTS, "OTHER")
    products["brand"] = "unknown"
    products["description"] = products["name"]
    return products[["product_id", "name", "category", "brand", "price", "description", "created_at"]]
