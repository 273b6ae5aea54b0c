"""include.models.insights on constructed statistics: profiles, rules text, checks, the LLM generator's contract."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from include.models.insights import (MAX_SUMMARY_CHARS, MAX_TIPS, OUTPUT_COLUMNS, InsightFormatError, LLMGenerator,
                                     RulesGenerator, check_insight, insight_document, parse_reply, profiles)

CATALOG = pd.DataFrame({
    "category": ["garden", "toys", "books", "kitchen"],
    "category_buyers": [120, 90, 40, 30],
    "product_id": [11, 22, 33, 44],
    "product_name": ["Rose Shears", "Wooden Train", "Cook Book", "Chef Knife"],
    "price": [12.5, 24.0, 9.99, None],
    "product_buyers": [35, 20, 12, 8],
})


def _user(customer_id, categories, orders=6, gaps=(5, 5, 5, 5, 5), days_since=2, products=4, items=None):
    """Rows of one user: categories = {name: (spend, items, orders)}."""
    spend = sum(s for s, _, _ in categories.values())
    total_items = items if items is not None else sum(i for _, i, _ in categories.values())
    return [{"customer_id": customer_id, "orders": orders, "spend": spend, "items": total_items,
             "products": products, "categories": len(categories), "days_since_last_order": days_since,
             "gaps": len(gaps), "gap_days_sum": sum(gaps), "gap_days_sq_sum": sum(g * g for g in gaps),
             "category": name, "category_orders": o, "category_items": i, "category_spend": s}
            for name, (s, i, o) in categories.items()]


@pytest.fixture
def stats():
    return pd.DataFrame(
        _user(7, {"garden": (80.0, 8, 5), "books": (15.0, 2, 2), "kitchen": (5.0, 1, 1)})
        + _user(3, {"toys": (30.0, 3, 3), "garden": (40.0, 4, 3), "books": (30.0, 3, 2)},
                gaps=(1, 9, 2, 12, 1), days_since=4, products=9, items=10)
    )


def test_profiles_derive_shares_and_rhythm(stats):
    found = {p.customer_id: p for p in profiles(stats)}
    assert list(found) == [3, 7]
    regular = found[7]
    assert regular.spend == 100.0 and regular.orders == 6 and regular.categories == 3
    assert [c for c, _, _ in regular.shares] == ["garden", "books", "kitchen"]
    assert regular.shares[0][1] == pytest.approx(0.8)
    assert regular.mean_gap_days == pytest.approx(5.0) and regular.gap_std_days == pytest.approx(0.0)
    irregular = found[3]
    assert irregular.mean_gap_days == pytest.approx(5.0)
    assert irregular.gap_std_days == pytest.approx(pd.Series([1, 9, 2, 12, 1]).std(ddof=0))


def test_profiles_fall_back_to_items_without_spend():
    frame = pd.DataFrame(_user(1, {"toys": (0.0, 3, 2), "books": (0.0, 1, 1)}))
    (profile,) = profiles(frame)
    assert profile.shares[0] == ("toys", 0.75, 2)


def test_profiles_name_the_missing_columns():
    with pytest.raises(ValueError, match="gap_days_sum"):
        profiles(pd.DataFrame({"customer_id": [1]}))


def test_rules_write_specific_text(stats):
    out = RulesGenerator(CATALOG, window_days=30).generate(stats)
    assert list(out.columns) == OUTPUT_COLUMNS and out["error"].isna().all()
    row = out.set_index("customer_id").loc[7]
    assert row["summary"] == ("6 orders in the last 30 days, 100.00 spent (16.67 per order) on 4 products "
                              "from 3 categories; mostly garden (80% of your spend).")
    tips = row["tips"]
    assert tips[0].startswith("garden takes 80% of your spend and appears in 5 of your 6 orders")
    # kitchen (5%) is rarer than 10% and bought before; toys was never bought but kitchen comes first
    assert tips[1].startswith("You rarely buy kitchen (5% of your spend); its best seller right now is Chef Knife")
    assert "about every 5 days" in tips[2] and "due in about 3 days" in tips[2]
    assert "re-ordering the same 4 products" in tips[3]


def test_rules_suggest_a_never_bought_category_and_describe_irregular_rhythm(stats):
    out = RulesGenerator(CATALOG).generate(stats).set_index("customer_id")
    tips = out.loc[3, "tips"]
    assert tips[0].startswith("Your spend is spread over several categories (garden 40%, books 30%, toys 30%)")
    assert tips[1] == ("You have not bought from kitchen lately, where 30 customers shopped recently: try its best "
                       "seller, Chef Knife.")
    assert "vary by ±5 days" in tips[2]
    assert "9 different products in 6 orders (1.7 items per order)" in tips[3]


def test_rules_are_deterministic_and_work_without_a_catalogue(stats):
    first = RulesGenerator(CATALOG).generate(stats)
    assert first.equals(RulesGenerator(CATALOG).generate(stats))
    bare = RulesGenerator().generate(stats)
    assert bare["error"].isna().all()
    assert all("best seller" not in tip for tips in bare["tips"] for tip in tips)


def test_rules_skip_rhythm_with_a_single_order():
    frame = pd.DataFrame(_user(5, {"toys": (10.0, 1, 1)}, orders=1, gaps=(), products=1))
    (tips,) = RulesGenerator(CATALOG).generate(frame)["tips"]
    assert not any("every" in t for t in tips) and 1 <= len(tips) <= MAX_TIPS


def test_check_insight_limits():
    assert check_insight("  ok ", [" a ", "b"]) == ("ok", ["a", "b"])
    for summary, tips, message in [
        ("", ["a"], "non-empty string"),
        ("x" * (MAX_SUMMARY_CHARS + 1), ["a"], "at most"),
        ("ok", "a tip", "list of strings"),
        ("ok", [], "expected 1 to"),
        ("ok", ["a"] * (MAX_TIPS + 1), "expected 1 to"),
        ("ok", ["a", 3], "tip 1"),
        ("ok", ["y" * 400], "tip 0 has 400 characters"),
    ]:
        with pytest.raises(InsightFormatError, match=message):
            check_insight(summary, tips)


def test_parse_reply_accepts_fenced_json_and_rejects_other_shapes():
    assert parse_reply('```json\n{"summary": "s", "tips": ["t"]}\n```') == ("s", ["t"])
    for reply, message in [("Sure! Here you go", "not JSON"), ('["s"]', "object with keys"),
                           ('{"summary": "s"}', "object with keys"), ('{"summary": 1, "tips": ["t"]}', "summary")]:
        with pytest.raises(InsightFormatError, match=message):
            parse_reply(reply)


def test_insight_document_shape():
    doc = json.loads(insight_document("s", ["t"], "2024-12-29T03:00:00+00:00", "rules"))
    assert doc == {"summary": "s", "tips": ["t"], "generated_at": "2024-12-29T03:00:00+00:00", "generator": "rules"}
    with pytest.raises(InsightFormatError):
        insight_document("s", [], "now", "rules")


class _Stop(Exception):
    pass


def test_llm_generator_shows_the_facts_counts_bad_replies_and_aborts(stats):
    seen = []

    def complete(messages):
        facts = json.loads(messages[-1]["content"])
        seen.append(facts)
        if facts["orders"] == 6 and facts["distinct_products"] == 9:
            return "not json"
        return json.dumps({"summary": f"{facts['orders']} orders", "tips": ["buy " + facts["suggestions"][0]["product_name"]]})

    out = LLMGenerator(complete, CATALOG, window_days=30).generate(stats).set_index("customer_id")
    assert out.loc[7, "summary"] == "6 orders" and out.loc[7, "tips"] == ["buy Chef Knife"]
    assert out.loc[3, "summary"] is None and "not JSON" in out.loc[3, "error"]
    assert seen[1]["category_shares"][0] == {"category": "garden", "share_of_spend": 0.8, "orders": 5}
    assert seen[1]["window_days"] == 30 and seen[1]["mean_days_between_orders"] == 5.0

    def exhausted(messages):
        raise _Stop("all keys gone")

    with pytest.raises(_Stop):
        LLMGenerator(exhausted, CATALOG, abort_on=(_Stop,)).generate(stats)
    errors = LLMGenerator(exhausted, CATALOG).generate(stats)["error"]
    assert errors.str.contains("all keys gone").all()


def test_run_user_ids_travel_with_the_settings_and_split_by_shard():
    import datetime as dt

    from include.jobs.order_insights import InsightsRun
    from include.jobs.run_params import entity_ids

    run = InsightsRun(as_of=dt.date(2024, 5, 31), days=30, min_orders=5, cache_ttl=86400, shard_count=2, limit=None,
                      generator="rules", dry_run=False, max_failure_rate=0.05, llm_conn_id="insights_llm",
                      run_key="manual__1", user_ids=entity_ids([9, 4, 4, 7]))
    data = run.to_dict()
    assert data["user_ids"] == [4, 7, 9] and json.loads(json.dumps(data)) == data
    assert InsightsRun.from_dict(data) == run
    assert run.requested(0, 2) == [4] and run.requested(1, 2) == [7, 9]
    assert InsightsRun.from_dict({**data, "user_ids": None}).requested(0, 2) == []
