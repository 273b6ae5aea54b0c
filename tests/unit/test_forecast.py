"""Unit tests for include.models.forecast on constructed series with known answers."""

import numpy as np
import pandas as pd
import pytest

from include.models.forecast import (
    ForecastEngine, WeeklyPanel, last_complete_week_start, panel_from_weekly, weekly_panel,
)

START = pd.Timestamp("2022-01-03")  # a Monday


def make_panel(rows, categories=None):
    q = np.asarray(rows, dtype=float)
    n, T = q.shape
    cust = np.where(np.isfinite(q), np.clip(np.nan_to_num(q), 0, None) / 2, 0.0)
    return WeeklyPanel(np.arange(1, n + 1, dtype=np.int64),
                       pd.date_range(START, periods=T, freq="7D"), q, cust, categories)


def run(rows, **kw):
    res = ForecastEngine(**kw).forecast(make_panel(rows))
    return res, res.products.set_index("product_id")


def preds(res, pid):
    return res.predictions[res.predictions.product_id == pid].reset_index(drop=True)


def check_contract(res, horizon=12):
    p = res.predictions
    assert list(p.columns) == ["product_id", "week_start", "week_end", "predicted_quantity",
                               "confidence_lower", "confidence_upper", "active_customers"]
    assert (p.confidence_lower >= 0).all()
    assert (p.confidence_lower <= p.predicted_quantity + 1e-9).all()
    assert (p.predicted_quantity <= p.confidence_upper + 1e-9).all()
    ok = res.products[res.products.status == "success"]
    assert len(p) == horizon * len(ok)
    acc = ok.forecast_accuracy_estimate.dropna()
    assert ((acc >= 0) & (acc <= 1)).all()


def test_constant_series_forecasts_constant_with_narrow_interval():
    rng = np.random.default_rng(1)
    rows = [np.full(60, 20.0), 20 + rng.normal(0, 0.5, 60)]
    res, prod = run(rows)
    check_contract(res)
    p = preds(res, 1)
    assert prod.loc[1, "status"] == "success"
    assert np.allclose(p.predicted_quantity, 20.0, atol=0.5)
    assert (p.confidence_upper - p.confidence_lower).max() < 4.0
    assert prod.loc[1, "forecast_accuracy_estimate"] > 0.95


def test_trend_continues_upward():
    t = np.arange(80)
    rng = np.random.default_rng(2)
    res, prod = run([10 + 2.0 * t + rng.normal(0, 1, 80), np.full(80, 5.0)])
    p = preds(res, 1).predicted_quantity.to_numpy()
    assert prod.loc[1, "status"] == "success"
    assert p[0] > 160  # last observed ~168; a flat mean of recent weeks would say ~160
    assert p[-1] >= p[0]


def test_seasonal_series_follows_the_season():
    weeks = np.arange(3 * 52)
    season = 50 + 40 * np.sin(2 * np.pi * weeks / 52)
    rng = np.random.default_rng(3)
    rows = [season + rng.normal(0, 2, len(weeks))]
    res, prod = run(rows)
    assert prod.loc[1, "status"] == "success"
    # holt_winters or a level riding the pooled last-year path; either must follow the season
    assert prod.loc[1, "model_type"] in {"holt_winters", "baseline", "ses", "combination"}
    fut = np.arange(3 * 52, 3 * 52 + 12)
    truth = 50 + 40 * np.sin(2 * np.pi * fut / 52)
    got = preds(res, 1).predicted_quantity.to_numpy()
    assert np.abs(got - truth).mean() < 8
    assert np.corrcoef(got, truth)[0, 1] > 0.9
    assert got[-1] - got[0] > 20  # truth rises ~39 over the horizon


def test_holt_winters_alone_follows_the_season():
    weeks = np.arange(3 * 52)
    rng = np.random.default_rng(3)
    rows = [50 + 40 * np.sin(2 * np.pi * weeks / 52) + rng.normal(0, 2, len(weeks))]
    res, prod = run(rows, pooled_strengths=(0.0,))
    assert prod.loc[1, "model_type"] == "holt_winters"
    truth = 50 + 40 * np.sin(2 * np.pi * np.arange(156, 168) / 52)
    assert np.abs(preds(res, 1).predicted_quantity.to_numpy() - truth).mean() < 8


def test_intermittent_level_matches_demand_rate():
    rng = np.random.default_rng(4)
    y = np.where(rng.random(120) < 0.25, 8.0, 0.0)  # mean rate 2 per week
    res, prod = run([y])
    assert prod.loc[1, "model_type"] in {"croston_sba", "tsb", "baseline"}
    rate = preds(res, 1).predicted_quantity.mean()
    assert 1.0 < rate < 3.2
    check_contract(res)


def test_intermittent_uses_croston_family_when_it_backtests_best():
    y = np.tile([0, 0, 0, 12.0], 30)  # exact rate 3, baseline trims the largest week
    res, prod = run([y])
    assert prod.loc[1, "model_type"] in {"croston_sba", "tsb"}
    assert preds(res, 1).predicted_quantity.mean() == pytest.approx(3.0, rel=0.2)


def test_too_short_and_all_zero_are_no_forecast():
    short = np.zeros(40)
    short[-3:] = [5, 6, 7]
    res, prod = run([short, np.zeros(40), np.full(40, 3.0)])
    assert prod.loc[1, "status"] == "no_forecast"
    assert prod.loc[2, "status"] == "no_forecast"
    assert prod.loc[3, "status"] == "success"
    assert set(res.predictions.product_id) == {3}
    assert "weeks" in prod.loc[1, "error"]


def test_negative_and_missing_weeks_are_zero_demand():
    clean = np.full(50, 10.0)
    clean[::5] = 0.0
    dirty = clean.copy()
    dirty[::5] = np.where(np.arange(10) % 2, -4.0, np.nan)
    res, prod = run([clean, dirty])
    assert (prod.status == "success").all()
    a, b = preds(res, 1), preds(res, 2)
    assert np.allclose(a.predicted_quantity, b.predicted_quantity)
    check_contract(res)


def test_horizon_starts_monday_after_last_complete_week():
    orders = pd.DataFrame({
        "customer_id": [1, 2, 1, 3],
        "product_id": [7, 7, 7, 7],
        "order_id": [1, 2, 3, 4],
        "order_date": pd.to_datetime(["2024-01-01", "2024-01-09", "2024-03-04", "2024-03-07"]),
        "quantity": [5.0, 5.0, 5.0, 99.0],
        "price": [1.0] * 4,
    })
    as_of = pd.Timestamp("2024-03-09 18:00")  # Saturday: week of 2024-03-04 is incomplete
    panel = weekly_panel(orders, as_of)
    assert panel.week_starts[0] == pd.Timestamp("2024-01-01")
    assert panel.week_starts[-1] == pd.Timestamp("2024-02-26")
    assert panel.quantity.sum() == 10.0  # the partial week's orders are excluded
    assert panel.customers[0, 1] == 1
    res = ForecastEngine(horizon=4).forecast(panel)
    starts = res.predictions.week_start
    assert starts.iloc[0] == pd.Timestamp("2024-03-04")
    assert (starts.dt.day_of_week == 0).all()
    assert (res.predictions.week_end - starts == pd.Timedelta(days=6)).all()
    # a Sunday as_of completes its own week
    assert last_complete_week_start(pd.Timestamp("2024-03-10")) == pd.Timestamp("2024-03-04")
    assert last_complete_week_start(pd.Timestamp("2024-03-11")) == pd.Timestamp("2024-03-04")


def test_panel_from_weekly_fills_missing_weeks_and_rejects_non_mondays():
    weekly = pd.DataFrame({
        "product_id": [1, 1, 2],
        "week_start": pd.to_datetime(["2024-01-01", "2024-01-15", "2024-01-08"]),
        "quantity": [3.0, 4.0, 1.0],
        "customers": [1, 2, 1],
    })
    panel = panel_from_weekly(weekly, as_of="2024-01-21")
    assert panel.quantity.tolist() == [[3.0, 0.0, 4.0], [0.0, 1.0, 0.0]]
    assert panel.product_ids.dtype == np.int64
    bad = weekly.assign(week_start=pd.to_datetime(["2024-01-02"] * 3))
    with pytest.raises(ValueError, match="Monday"):
        panel_from_weekly(bad, as_of="2024-01-21")


def test_garbage_product_errors_while_others_succeed():
    good = np.full(30, 4.0)
    garbage = np.full(30, 4.0)
    garbage[10] = np.inf
    res, prod = run([good, garbage, good * 2])
    assert prod.loc[2, "status"] == "error"
    assert "infinite" in prod.loc[2, "error"]
    assert prod.loc[1, "status"] == "success" and prod.loc[3, "status"] == "success"
    assert set(res.predictions.product_id) == {1, 3}
    # the broken row must not leak into pooled signals
    assert np.allclose(preds(res, 1).predicted_quantity, 4.0, atol=0.2)


def test_active_customers_follow_quantity():
    res, _ = run([np.full(30, 10.0)])
    assert np.allclose(preds(res, 1).active_customers, 5.0, atol=0.3)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="interval_level"):
        ForecastEngine(interval_level=1.5)
    with pytest.raises(ValueError, match="horizon"):
        ForecastEngine(horizon=0)


def test_vectorised_batch_matches_single_products():
    rng = np.random.default_rng(5)
    rows = rng.poisson(6, (20, 60)).astype(float)
    res_all = ForecastEngine().forecast(make_panel(rows))
    single = ForecastEngine(pooled_strengths=(0.0,)).forecast(make_panel(rows[:1]))
    both = ForecastEngine(pooled_strengths=(0.0,)).forecast(make_panel(rows))
    assert np.allclose(preds(single, 1).predicted_quantity, preds(both, 1).predicted_quantity)
    check_contract(res_all)


def test_exception_inside_batch_fails_only_that_product(monkeypatch):
    import include.models.forecast as fc

    real = fc._MODEL_FUNCS["ses"]

    def fragile_ses(y, first, cutoffs, h):
        if (y == 13.0).any():  # stands in for any numerical failure on odd data
            raise FloatingPointError("cannot smooth a 13")
        return real(y, first, cutoffs, h)

    monkeypatch.setitem(fc._MODEL_FUNCS, "ses", fragile_ses)
    rows = np.full((9, 40), 6.0)
    rows[4, 20] = 13.0
    res = ForecastEngine().forecast(make_panel(rows))
    prod = res.products.set_index("product_id")
    assert prod.loc[5, "status"] == "error"
    assert "cannot smooth a 13" in prod.loc[5, "error"]
    assert (prod.drop(index=5).status == "success").all()
    assert len(res.predictions) == 8 * 12


def test_empty_panel_returns_empty_frames():
    panel = WeeklyPanel(np.zeros(0, dtype=np.int64), pd.date_range(START, periods=10, freq="7D"),
                        np.zeros((0, 10)), np.zeros((0, 10)))
    res = ForecastEngine().forecast(panel)
    assert res.predictions.empty and res.products.empty


def test_short_products_borrow_the_pooled_season():
    rng = np.random.default_rng(6)
    n, T = 300, 156
    t = np.arange(T + 12)
    season = 1 + 0.6 * np.sin(2 * np.pi * (t - 30) / 52)  # falling over the horizon
    lam = rng.gamma(2, 5, n)[:, None] * season[None, :]
    y = rng.poisson(lam).astype(float)
    y[:150, : T - 40] = 0.0  # half the catalogue launched 40 weeks ago: no own season
    res = ForecastEngine().forecast(make_panel(y[:, :T]))
    assert res.diagnostics["pooled_strength"] > 0
    got = res.predictions.predicted_quantity.to_numpy().reshape(-1, 12)
    ids = res.predictions.product_id.to_numpy()[::12] - 1
    short = ids < 150
    truth = lam[ids[short]][:, T:].sum(axis=0)
    path = got[short].sum(axis=0)
    assert path[-1] < 0.75 * path[0]  # a flat per-series level would stay put
    assert np.abs(path - truth).sum() / truth.sum() < 0.2
    no_pool = ForecastEngine(pooled_strengths=(0.0,)).forecast(make_panel(y[:, :T]))
    flat = no_pool.predictions.predicted_quantity.to_numpy().reshape(-1, 12)[short].sum(axis=0)
    assert np.abs(path - truth).sum() < 0.6 * np.abs(flat - truth).sum()
