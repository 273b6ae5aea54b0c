"""The end-to-end tests' cluster (scripts/airflow_cluster.py) and what they check against it."""
from __future__ import annotations

import os

from scripts.airflow_cluster import ROOT, TIMEOUT, Cluster, running_cluster  # noqa: F401

AS_OF, WEEK = "2024-06-02", "2024-W22"  # the data of conftest.data ends 2024-06-03


def blocked_shard(admin, table: str = "WeeklyRecommendation") -> tuple[int, int] | None:
    """(client port, backend pid) of a session waiting on a lock to delete from `table` (a shard
    the test holds up with its own lock)."""
    return admin.execute("SELECT client_port, pid FROM pg_stat_activity WHERE datname = current_database() "
                         "AND wait_event_type = 'Lock' AND query LIKE %s LIMIT 1",
                         (f'%DELETE FROM "{table}"%',)).fetchone()


def process_on_port(port: int):
    """The local process that owns the TCP connection from `port` (a task process's DB session)."""
    import psutil

    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.pid and conn.pid != os.getpid():
            return psutil.Process(conn.pid)
    return None


def active_customers(data, as_of: str) -> set[int]:
    """The customers weekly_recs must serve as of `as_of`, from the generated frames."""
    import pandas as pd

    until = pd.Timestamp(as_of) + pd.Timedelta(days=1)
    recent = data.orders[(data.orders["order_date"] >= until - pd.Timedelta(days=90))
                         & (data.orders["order_date"] < until)]
    c = data.customers.set_index("customer_id")
    ok = c[(c["is_active"] == 1) & (c["is_blocked"] == 0) & (c["deleted"] == 0)].index
    return set(recent["customer_id"]) & set(ok)
