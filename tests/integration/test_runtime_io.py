"""The runtime I/O modules against real PostgreSQL and Redis."""
from __future__ import annotations

import logging
import re

import pandas as pd
import pytest

from include.runtime.bulk_writer import BulkWriter
from include.runtime.redis_cache import RedisCache
from include.runtime.schema import migrate


def _recs(week: str, customers: range, ranks: int = 3) -> pd.DataFrame:
    return pd.DataFrame([
        {"CustomerID": c, "Week": week, "ProductID": 100 + r, "Rank": r, "Score": 1.0 / r,
         "Source": "repeat", "GeneratedAt": pd.Timestamp("2025-11-10 06:00"), "ProductName": f"Product {r}",
         "Category": "Tea", "PredictedQuantity": None, "LastPurchased": None, "PurchaseFrequencyDays": None,
         "ExpiresAt": pd.Timestamp("2025-11-18 06:00")}
        for c in customers for r in range(1, ranks + 1)])


def _count(database, sql: str, params=None) -> int:
    with database.conn.cursor() as cur:
        cur.execute(sql, params)
        value = cur.fetchone()[0]
    database.conn.commit()
    return value


def test_migrations_are_idempotent(database):
    assert migrate(database) == migrate(database)
    assert _count(database, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'WeeklyRecommendation'") == 1


def test_bulk_load_replaces_a_shard_in_one_transaction(database):
    writer = BulkWriter(database)
    database.conn.execute('DELETE FROM "WeeklyRecommendation"')
    database.conn.commit()
    params = {"week": "2025-W46", "shard": 0, "of": 1}
    assert writer.load("WeeklyRecommendation", _recs("2025-W46", range(1, 11)), "delete_weekly_recommendations", params) == 30
    writer.load("WeeklyRecommendation", _recs("2025-W46", range(1, 11)), "delete_weekly_recommendations", params)
    assert _count(database, 'SELECT count(*) FROM "WeeklyRecommendation"') == 30

    broken = _recs("2025-W46", range(1, 11))
    broken["Score"] = broken["Score"].astype(object)
    broken.loc[25, "Score"] = "not a number"  # the COPY fails on the last rows, after the delete
    with pytest.raises(Exception):
        writer.load("WeeklyRecommendation", broken, "delete_weekly_recommendations", params)
    assert _count(database, 'SELECT count(*) FROM "WeeklyRecommendation"') == 30, "a failed load must keep the old rows"


def test_rows_in_parts_replace_in_one_transaction(database):
    writer = BulkWriter(database)
    database.conn.execute('DELETE FROM "WeeklyRecommendation"')
    database.conn.commit()
    writer.load("WeeklyRecommendation", _recs("2025-W47", range(1, 11)))
    only = [{"week": "2025-W47", "customer_id": c} for c in (2, 3)]

    with pytest.raises(RuntimeError, match="cut off"):
        with writer.replacing("WeeklyRecommendation", "delete_weekly_recommendations_customer", only) as load:
            assert load(_recs("2025-W47", range(2, 3))) == 3
            raise RuntimeError("cut off between two parts")
    assert _count(database, 'SELECT count(*) FROM "WeeklyRecommendation"') == 30, "a cut-off stream keeps the old rows"

    with writer.replacing("WeeklyRecommendation", "delete_weekly_recommendations_customer", only) as load:
        for customer in (2, 3):
            load(_recs("2025-W47", range(customer, customer + 1), ranks=2))
    counts = database.conn.execute('SELECT "CustomerID", count(*) FROM "WeeklyRecommendation" GROUP BY 1').fetchall()
    database.conn.commit()
    assert dict(counts) == {c: 2 if c in (2, 3) else 3 for c in range(1, 11)}


def test_bulk_load_refuses_unknown_tables_and_missing_columns(database):
    writer = BulkWriter(database)
    with pytest.raises(ValueError, match="unknown table"):
        writer.load("pg_user; DROP TABLE x", pd.DataFrame({"a": [1]}))
    with pytest.raises(ValueError, match="lack columns"):
        writer.load("WeeklyRecommendation", pd.DataFrame({"CustomerID": [1]}))


@pytest.mark.parametrize(("part_rows", "progress"), [(3, [3, 6]), (7, [7]), (500_000, [])])
def test_bulk_frame_reads_in_parts_the_rows_of_a_bound_query(database, caplog, part_rows, progress):
    database.conn.execute("DELETE FROM dead_letter")
    for i in range(7):
        database.conn.execute("INSERT INTO dead_letter (job_id, job_name, error, input) VALUES (%s, 'bulk', 'e', %s)",
                              (f"bulk:{i}", str(i)))
    database.conn.execute("INSERT INTO dead_letter (job_id, job_name, error, input) VALUES ('other:0', 'bulk', 'e', 'x')")
    database.conn.commit()

    with caplog.at_level(logging.INFO, logger="include.runtime.database"):
        rows = database.bulk_frame("dead_letters_of_run", {"prefix": "bulk:%"}, part_rows=part_rows)
    assert rows.to_dict("list") == {"job_id": [f"bulk:{i}" for i in range(7)], "input": [str(i) for i in range(7)]}
    read = [re.fullmatch(r"query 'dead_letters_of_run': (\d+) rows read \([\d,]+/s\)", m)
            for m in caplog.messages if "rows read" in m]
    assert [int(r.group(1)) for r in read] == progress
    none = database.bulk_frame("dead_letters_of_run", {"prefix": "' OR ''='"}, part_rows=part_rows)
    assert list(none.columns) == ["job_id", "input"] and none.empty


def test_redis_set_many_pipelines_with_ttl(services, redis_client):
    cache = RedisCache(chunk_size=7)
    written = cache.set_many(((f"t:{i}", f"v{i}") for i in range(100)), ttl=60)
    assert written == 100
    assert redis_client.dbsize() == 100
    assert redis_client.get("t:42") == b"v42"
    assert 0 < redis_client.ttl("t:99") <= 60
    cache.set_json("meta", {"a": 1})
    assert cache.get_json("meta") == {"a": 1} and redis_client.ttl("meta") == -1
    cache.close()
