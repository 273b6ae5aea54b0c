"""Fixtures of the end-to-end tests."""
from __future__ import annotations

import pytest

from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate


@pytest.fixture(scope="module")
def data(database):
    """A small order history in the test database; no backup rows yet."""
    data = generate(customers=200, products=50, start="2023-01-02", end="2024-06-03", seed=31)
    load_source(database, data.orders, data.products, data.customers)
    return data
