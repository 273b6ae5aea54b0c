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


def fit_forecast(panel, **kw):
    """The engine's pooled state fitted on `panel`, applied to the same panel."""
    return ForecastEngine(**kw).fit(panel).forecast(panel)


def run(rows, **kw):
    res = fit_forecast(make_panel(rows), **kw)
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
    res = fit_forecast(panel, horizon=4)
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
    res_all = fit_forecast(make_panel(rows))
    single = fit_forecast(make_panel(rows[:1]), pooled_strengths=(0.0,))
    both = fit_forecast(make_panel(rows), pooled_strengths=(0.0,))
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
    res = fit_forecast(make_panel(rows))
    prod = res.products.set_index("product_id")
    assert prod.loc[5, "status"] == "error"
    assert "cannot smooth a 13" in prod.loc[5, "error"]
    assert (prod.drop(index=5).status == "success").all()
    assert len(res.predictions) == 8 * 12
    trace = prod.loc[5, "stack_trace"]
    assert "Traceback" in trace and "fragile_ses" in trace and "FloatingPointError" in trace
    assert prod.drop(index=5).stack_trace.isna().all()


def test_empty_panel_returns_empty_frames():
    panel = WeeklyPanel(np.zeros(0, dtype=np.int64), pd.date_range(START, periods=10, freq="7D"),
                        np.zeros((0, 10)), np.zeros((0, 10)))
    res = fit_forecast(panel)
    assert res.predictions.empty and res.products.empty


def test_short_products_borrow_the_pooled_season():
    rng = np.random.default_rng(6)
    n, T = 300, 156
    t = np.arange(T + 12)
    season = 1 + 0.6 * np.sin(2 * np.pi * (t - 30) / 52)  # falling over the horizon
    lam = rng.gamma(2, 5, n)[:, None] * season[None, :]
    y = rng.poisson(lam).astype(float)
    y[:150, : T - 40] = 0.0  # half the catalogue launched 40 weeks ago: no own season
    res = fit_forecast(make_panel(y[:, :T]))
    assert res.diagnostics["pooled_strength"] > 0
    got = res.predictions.predicted_quantity.to_numpy().reshape(-1, 12)
    ids = res.predictions.product_id.to_numpy()[::12] - 1
    short = ids < 150
    truth = lam[ids[short]][:, T:].sum(axis=0)
    path = got[short].sum(axis=0)
    assert path[-1] < 0.75 * path[0]  # a flat per-series level would stay put
    assert np.abs(path - truth).sum() / truth.sum() < 0.2
    no_pool = fit_forecast(make_panel(y[:, :T]), pooled_strengths=(0.0,))
    flat = no_pool.predictions.predicted_quantity.to_numpy().reshape(-1, 12)[short].sum(axis=0)
    assert np.abs(path - truth).sum() < 0.6 * np.abs(flat - truth).sum()


def _catalogue(n=240, T=130, seed=7):
    """Products of four categories (some unknown): seasonal, launched late, intermittent."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    lam = rng.gamma(1.5, 4, n)[:, None] * (1 + 0.5 * np.sin(2 * np.pi * (t - 20) / 52))[None, :]
    y = rng.poisson(lam).astype(float)
    y[: n // 3, : T - 30] = 0.0
    y[n // 3: n // 2] *= rng.random((n // 2 - n // 3, T)) < 0.2
    categories = np.array(["a", "b", "c", "d"])[rng.integers(0, 4, n)]
    categories[:5] = "unknown"
    return make_panel(y, categories)


def _subset(panel, rows, weeks=slice(None)):
    return WeeklyPanel(panel.product_ids[rows], panel.week_starts[weeks], panel.quantity[rows][:, weeks],
                       panel.customers[rows][:, weeks], panel.categories[rows])


def _by_product(res):
    return res.predictions.sort_values(["product_id", "week_start"]).set_index(["product_id", "week_start"])


def test_subsets_forecast_as_the_whole_catalogue_with_the_fitted_state(tmp_path):
    panel = _catalogue()
    engine = ForecastEngine().fit(panel)
    assert len(engine.pool_categories_) >= 2  # the categories pool: the test covers pooling
    whole = _by_product(engine.forecast(panel))
    engine.save(tmp_path)
    loaded = ForecastEngine.load(tmp_path)
    n = len(panel.product_ids)
    cuts = [np.arange(n) % 10 == k for k in range(10)] + [np.array([n // 2]), np.arange(n) < 7]
    for rows in cuts:
        part = _by_product(loaded.forecast(_subset(panel, rows)))
        assert len(part) and part.index.isin(whole.index).all()
        np.testing.assert_allclose(part.to_numpy(float), whole.loc[part.index].to_numpy(float), rtol=0, atol=1e-9)
    # a one-product panel starting at the product's first sale reads the weeks before as zero demand
    row = int(np.flatnonzero(panel.quantity[:, 0] == 0)[0])
    start = int(np.flatnonzero(panel.quantity[row] > 0)[0])
    late = _by_product(loaded.forecast(_subset(panel, [row], slice(start, None))))
    np.testing.assert_allclose(late.to_numpy(float), whole.loc[late.index].to_numpy(float), rtol=0, atol=1e-9)


def test_state_is_saved_without_pickle_and_keyed_by_category_name(tmp_path):
    panel = _catalogue()
    engine = ForecastEngine(horizon=6, pooled_strengths=(0.0, 1.0)).fit(panel)
    path = engine.save(tmp_path)
    with np.load(path, allow_pickle=False) as data:  # no object arrays anywhere
        assert {"pool_factor", "pool_categories", "calibration"} <= set(data.files)
    loaded = ForecastEngine.load(tmp_path)
    assert loaded.horizon == 6 and loaded.pooled_strengths == (0.0, 1.0)
    assert loaded.strength_ == engine.strength_ and list(loaded.pool_categories_) == list(engine.pool_categories_)
    np.testing.assert_array_equal(loaded.pool_factor_, engine.pool_factor_)
    # pools follow the category name, not its position; an unseen category gets the global pool
    names = np.asarray(engine.pool_categories_)
    assert list(engine._pool_index(names[::-1], len(names))) == list(range(len(names), 0, -1))
    assert list(engine._pool_index(np.array(["never seen", "unknown"]), 2)) == [0, 0]


def test_forecast_needs_a_fitted_state_on_the_same_weeks():
    panel = _catalogue(n=40)
    with pytest.raises(ValueError, match="fit"):
        ForecastEngine().forecast(panel)
    engine = ForecastEngine().fit(panel)
    with pytest.raises(ValueError, match="same as_of"):
        engine.forecast(_subset(panel, np.arange(3), slice(None, -1)))
    with pytest.raises(FileNotFoundError, match="no fitted forecast state"):
        ForecastEngine.load("/nonexistent/forecast-state")


def test_a_product_crashing_at_fit_time_stays_out_of_the_pooled_state(monkeypatch):
    panel = _catalogue(n=60)
    without = ForecastEngine().fit(_subset(panel, np.arange(1, 60)))
    engine = ForecastEngine()
    real = engine._run_models

    def run_models(y, first, cutoffs, h):  # stands in for any model failing on product 1's series
        if any(np.array_equal(row, panel.quantity[0]) for row in y):
            raise ZeroDivisionError("odd series")
        return real(y, first, cutoffs, h)

    monkeypatch.setattr(engine, "_run_models", run_models)
    engine.fit(panel)
    assert engine.strength_ == without.strength_
    np.testing.assert_array_equal(engine.lower_quantiles_, without.lower_quantiles_)
    products = engine.forecast(panel).products.set_index("product_id")
    assert products.loc[1, "status"] == "error" and "odd series" in products.loc[1, "stack_trace"]
    assert (products.drop(index=1).status != "error").all()
