"""The T-SQL twin of every query parses, and its PostgreSQL transpilation returns the same rows
(a statement: the same row count, and the tables it writes hold the same rows after it).

SQL Server cannot run here, so each include/sql/mssql file is parsed with sqlglot, transpiled
to PostgreSQL and run on the real server beside the PostgreSQL file, on the same data.
"""
from __future__ import annotations

import datetime as dt
import re

import pandas as pd
import pytest
import sqlglot
from psycopg import sql as psql

from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate
from include.runtime import dead_letters
from include.runtime.database import SQL_ROOT

_SHARD = {"shard": 1, "of": 3}
_FORECAST = {"start": dt.datetime(2019, 1, 1), "until": dt.datetime(2024, 6, 1), "min_customers": 2,
             "min_orders": 3, "max_quantity": 1000.0}
_RECS = {"since": dt.datetime(2024, 3, 1), "until": dt.datetime(2024, 6, 1), "history_start": dt.datetime(2023, 6, 1),
         "max_customer": 250, "first_customer": 10, "last_customer": 250, "max_quantity": 1000.0, **_SHARD}


def _decay_params() -> dict:
    from include.models.popularity import Decay

    return Decay(7.0, 90.0).sql_params(dt.datetime(2024, 6, 1, 12))


# Sample parameters of every query; a query missing here fails the coverage test.
SAMPLE_PARAMS: dict[str, dict] = {
    "count_order_items": {},
    "truncate_source": {},
    "drop_source_indexes": {},
    "delete_weekly_recommendations": {"week": "2024-W10", **_SHARD},
    "weekly_recommendation_customers": {"week": "2024-W10", **_SHARD},
    "weekly_recommendation_rows": {"week": "2024-W10", **_SHARD},
    "delete_dead_letters": {"job_id": "sample:0/1", "job_name": "sample_job"},
    "dead_letters_list": {"job_name": None, "limit": 10},
    # maintenance retention (a far cutoff so the sample dead letter counts) and dead-letter redrive
    **{name: {"before": dt.datetime(2100, 1, 1), "batch": 10}
       for name in ("count_expired_dead_letters", "delete_expired_dead_letters", "count_expired_backfill_reports",
                    "delete_expired_backfill_reports")},
    "dead_letters_pending": {"job_name": "sample_job", "since": dt.datetime(2000, 1, 1)},
    "mark_dead_letter_redriven": {"id": 1, "redriven_at": dt.datetime(2024, 6, 1), "run_id": "redrive__x"},
    **{f"order_insights_{q}": {"since": dt.datetime(2024, 5, 2), "until": dt.datetime(2024, 6, 1),
                               "as_of": dt.date(2024, 5, 31), "min_orders": 3, "limit": 10_000, "max_quantity": 1000.0,
                               **_SHARD}
       for q in ("users", "stats", "catalog")},
    "forecast_products": _FORECAST,
    "active_customers": _RECS,
    "recs_shard_history": _RECS,
    "recs_training_orders": _RECS,
    "catalogue": {"until": dt.datetime(2024, 1, 1)},
    "recs_feedback": {"week": "2024-W10", "since": dt.datetime(2024, 3, 10), "until": dt.datetime(2024, 3, 17)},
    "forecast_weekly_history": {**_FORECAST, **_SHARD, "cutoff_orders": 40, "cutoff_product": 30},
    # popularity, popular_segments, user_affinity: decayed event scores as of 2024-06-01 12:00
    **{name: {**_decay_params(), "top_n": 5, "job": "user_affinity", "watermark": dt.datetime(2024, 6, 1),
              "updated_at": dt.datetime(2024, 6, 2), "full": 0, "changed_since": dt.datetime(2024, 3, 1),
              "expired_since": dt.datetime(2024, 1, 1), "expired_until": dt.datetime(2024, 1, 2),
              "everyone": 0, "run_key": "r1", "created_at": dt.datetime(2024, 6, 2),
              "stale_before": dt.datetime(2024, 5, 26)}
       for name in ("events_quality", "source_columns", "update_popularity_scores", "popularity_score_stats",
                    "popularity_top", "popular_segments", "delete_popular_items", "insert_user_affinity_recompute",
                    "delete_user_category_affinity", "delete_user_profiles", "truncate_user_category_affinity",
                    "truncate_user_profiles", "user_affinity_products", "user_affinity_stats", "upsert_job_watermark",
                    "delete_user_affinity_recompute", "user_affinity_redis_rows", "job_watermark", "user_affinity_events")},
    # cf_training and faiss_rebuild
    **{name: {"since": dt.datetime(2023, 6, 1), "cutoff": dt.datetime(2024, 5, 1), "until": dt.datetime(2024, 6, 1)}
       for name in ("cf_order_interactions", "cf_event_interactions")},
    "delete_user_similarities": {},
    "product_texts": {},
    # a low quantity bound, so the clean sample data has bad rows to classify
    "source_bad_rows": {"start": dt.datetime(2024, 1, 1), "until": dt.datetime(2024, 6, 1),
                        "future_after": dt.datetime(2024, 6, 1), "max_quantity": 2.0, "max_rows": 5},
    # backfill
    "product_ids_between": {"low": 1, "high": 20},
    "client_ids_between": {"low": 1, "high": 20},
    "dead_letters_of_run": {"prefix": "sample:%"},
    "delete_weekly_recommendations_customer": {"week": "2024-W10", "customer_id": 3},
    "insert_user_affinity_recompute_user": {"run_key": "r1", "user_id": 987654, "created_at": dt.datetime(2024, 6, 2)},
    "delete_backfill_report": {"run_id": "x"},
}
# A statement a run executes just before the query, in its transaction, which the seeded state needs:
# a run empties its own users to recompute first, and the seeded ones would collide.
RUN_BEFORE = {"insert_user_affinity_recompute": "delete_user_affinity_recompute"}
# Index DDL: both dialects must drop exactly these indexes (every secondary index of the migrations'
# source tables).
INDEX_DROPS = {"drop_source_indexes": sorted(["ix_clientagreement_client", "ix_order_created", "ix_order_agreement",
                                              "ix_orderitem_order", "ix_orderitem_product", "ix_events_ts",
                                              "ix_events_user"])}
QUERIES = sorted(p.stem for p in (SQL_ROOT / "postgres").glob("*.sql"))
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _pyformat(sql: str) -> str:
    return re.sub(r"\$(\w+)", r"%(\1)s", sql)


def test_every_query_has_both_dialects_and_sample_params():
    mssql = sorted(p.stem for p in (SQL_ROOT / "mssql").glob("*.sql"))
    assert QUERIES == mssql
    assert sorted(SAMPLE_PARAMS) == QUERIES, "add sample parameters for new queries to SAMPLE_PARAMS"


@pytest.mark.parametrize("name", QUERIES)
def test_tsql_parses(name):
    tsql = _PLACEHOLDER.sub(r"@\1", (SQL_ROOT / "mssql" / f"{name}.sql").read_text()).replace("%%", "%")
    assert all(e is not None for e in sqlglot.parse(tsql, read="tsql", error_level=sqlglot.ErrorLevel.RAISE))


def _schema(sql: str, dialect: str) -> dict[str, list[str]]:
    """Tables with their columns, indexes with their table and columns; dropped tables as None."""
    found = {}
    for statement in sqlglot.parse(sql, read=dialect, error_level=sqlglot.ErrorLevel.RAISE):
        assert isinstance(statement, (sqlglot.exp.Create, sqlglot.exp.Alter, sqlglot.exp.Drop)), statement.sql()
        if isinstance(statement, sqlglot.exp.Drop):
            found.update({table.name: None for table in statement.args["tables"]})
        elif isinstance(statement, sqlglot.exp.Alter):  # ADD COLUMN: the columns under the table's name
            found.setdefault(statement.this.name, []).extend(
                c.name for c in statement.args["actions"] if isinstance(c, sqlglot.exp.ColumnDef))
        elif statement.kind == "TABLE":
            schema = statement.this
            found[schema.this.name] = [c.name for c in schema.expressions if isinstance(c, sqlglot.exp.ColumnDef)]
        else:
            index = statement.this
            found[index.name] = [index.args["table"].name] + [c.name for c in index.find_all(sqlglot.exp.Column)]
    return found


@pytest.mark.parametrize("migration", sorted(p.name for p in (SQL_ROOT / "postgres" / "migrations").glob("*.sql")))
def test_migrations_define_the_same_tables(migration):
    pg = _schema((SQL_ROOT / "postgres" / "migrations" / migration).read_text(), "postgres")
    guard = re.compile(r"^IF (OBJECT_ID|NOT EXISTS).*$", re.M)  # sqlglot has no IF blocks: drop the guards
    tsql = guard.sub("", (SQL_ROOT / "mssql" / "migrations" / migration).read_text()).replace("dbo.", "")
    assert _schema(tsql, "tsql") == pg


# Output rows the generated data lacks. user_affinity in the middle of a run: the users run "r1"
# recomputes (with events in the window, one without any rows, one with stale rows), another run's
# user and a row left by a run that failed long ago, a stale row of a user not recomputed, the
# previous run's watermark; cf_training's similarities of an earlier model; and rows for the
# delete statements to remove and keep: two weeks of recommendations, segment and global
# popular items, two backfill reports.
_OUTPUT_ROWS = """
INSERT INTO user_affinity_recompute (run_key, user_id, created_at)
    SELECT 'r1', user_id, TIMESTAMP '2024-06-02' FROM
    ((SELECT DISTINCT user_id FROM events WHERE ts > '2024-04-01' AND ts <= '2024-06-01' ORDER BY user_id LIMIT 5)
     UNION ALL VALUES (900001), (900002)) AS users
    UNION ALL VALUES ('r2', 900003, TIMESTAMP '2024-06-02'), ('gone', 900004, TIMESTAMP '2024-01-01');
INSERT INTO user_category_affinity (user_id, category, affinity, updated_at)
    VALUES (900002, 'stale', 1.0, '2024-05-01'), (900002, 'older', 0.25, '2024-05-01'),
           (900003, 'kept', 1.0, '2024-05-01');
INSERT INTO user_profiles (user_id, preferred_categories, preferred_brands, avg_price, interaction_count, updated_at)
    VALUES (900002, 'stale,older', '', 10.0, 4, '2024-05-01');
INSERT INTO job_watermark (job_name, watermark, updated_at) VALUES ('user_affinity', '2024-05-25', '2024-05-26');
INSERT INTO user_similarities (user_id, rank, similar_user_id, score, model_version)
    VALUES (1, 1, 2, 0.9, 'v0'), (1, 2, 3, 0.5, 'v0');
INSERT INTO "WeeklyRecommendation" ("CustomerID", "Week", "ProductID", "Rank", "Score", "Source", "GeneratedAt")
    SELECT c, w, 10 + c, 1, 0.5, 'repeat', TIMESTAMP '2024-03-04'
    FROM generate_series(1, 6) AS c, (VALUES ('2024-W10'), ('2024-W09')) AS weeks (w);
INSERT INTO popular_items (segment_type, segment_value, category, product_id, rank, score, computed_at)
    VALUES ('gender', 'f', 'a', 1, 1, 2.0, '2024-06-01'), ('geo', '5', 'a', 2, 1, 1.0, '2024-06-01'),
           ('global', '', 'a', 1, 1, 3.0, '2024-06-01');
INSERT INTO backfill_report (run_id, job_name, as_of, succeeded, failed, skipped, detail, created_at)
    VALUES ('x', 'weekly_recs', '2024-03-04', 5, 0, 0, '{}', '2024-03-05'),
           ('y', 'forecast_worker', '2024-03-04', 7, 1, 0, '{}', '2024-03-05');
"""


@pytest.fixture(scope="module")
def source_data(database):
    data = generate(customers=300, products=60, start="2023-01-02", end="2024-06-03", seed=3)
    load_source(database, data.orders, data.products, data.customers, data.events)
    dead_letters.record(database, "sample_job", "sample:0/1", pd.DataFrame({"error": ["boom"], "input": [{"id": 1}]}))
    database.conn.execute(_OUTPUT_ROWS)
    database.conn.commit()
    return data


def _written_tables(tsql: str) -> list[str]:
    """The tables a statement writes, so a DML pair compares what it left, not only its row count."""
    tables = []
    for statement in sqlglot.parse(tsql, read="tsql"):
        if isinstance(statement, sqlglot.exp.TruncateTable):
            tables += [t.name for t in statement.expressions]
        elif isinstance(statement, (sqlglot.exp.Insert, sqlglot.exp.Update, sqlglot.exp.Delete, sqlglot.exp.Merge)):
            tables.append(statement.this.find(sqlglot.exp.Table).name)
    return tables


def _run(database, sql: str, params: dict, before: str | None, written: list[str]):
    """The query's rows (or row count) and the written tables' rows after it; rolled back."""
    with database.conn.cursor() as cur:
        if before:
            cur.execute(before, params)
        cur.execute(sql, params)
        result = cur.fetchall() if cur.description else cur.rowcount
        # sorted by repr: rows in no particular order, and None beside values
        contents = [sorted(cur.execute(psql.SQL("SELECT * FROM {}").format(psql.Identifier(t))).fetchall(), key=repr)
                    for t in written]
    database.conn.rollback()
    return result, contents


def _dropped_indexes(sql: str, dialect: str) -> list[str]:
    return sorted(t.name for s in sqlglot.parse(sql, read=dialect)
                  if isinstance(s, sqlglot.exp.Drop) and s.args.get("kind") == "INDEX" for t in s.args["tables"])


@pytest.mark.parametrize("name", QUERIES)
def test_tsql_returns_the_postgres_rows(database, source_data, name):
    params = SAMPLE_PARAMS[name]
    if name in INDEX_DROPS:  # sqlglot keeps T-SQL's `DROP INDEX i ON t`, which PostgreSQL rejects
        pg = (SQL_ROOT / "postgres" / f"{name}.sql").read_text()
        tsql = (SQL_ROOT / "mssql" / f"{name}.sql").read_text()
        assert _dropped_indexes(tsql, "tsql") == _dropped_indexes(pg, "postgres") == INDEX_DROPS[name]
        _run(database, pg, params, None, [])  # and the PostgreSQL file runs (rolled back)
        return
    before = (SQL_ROOT / "postgres" / f"{RUN_BEFORE[name]}.sql").read_text() if name in RUN_BEFORE else None
    tsql = _PLACEHOLDER.sub(r"@\1", (SQL_ROOT / "mssql" / f"{name}.sql").read_text()).replace("%%", "%")
    written = _written_tables(tsql)
    expected = _run(database, (SQL_ROOT / "postgres" / f"{name}.sql").read_text(), params, before, written)
    transpiled = ";\n".join(sqlglot.transpile(tsql, read="tsql", write="postgres", identify=True))
    actual = _run(database, _pyformat(transpiled.replace("%", "%%")), params, before, written)
    rows, _ = expected
    assert rows != [] and rows != 0, f"{name}: sample parameters touch no row; the comparison would be empty"
    if rows == -1:  # TRUNCATE reports no row count (SQL Server's DELETEs do): compare what it leaves
        actual = (rows, actual[1])
    assert actual == expected
