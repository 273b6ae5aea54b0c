"""Weekly demand forecasts per product, vectorised across the products x weeks panel.

Models run as numpy recursions over all series at once (one pass per parameter
setting); each pass records its forecast at every backtest cutoff, so the
rolling-origin backtest that picks a model per product costs no extra fits.

Input policy: missing weeks and NaN quantities count as zero demand; negative
weekly quantities (net returns) are clipped to zero. Infinite values are not
repaired: that product ends with status 'error' and the batch goes on.

The pooled signals (category paths, pooled strength, calibration, interval quantiles) are
fitted once on the whole catalogue (`ForecastEngine.fit`, saved as npz) and applied to any
subset (`forecast`), so a product's forecast does not depend on how the catalogue is cut.
"""

from __future__ import annotations

import json
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

SEASON = 52
WEEK = pd.Timedelta(days=7)
PREDICTION_COLUMNS = [
    "product_id", "week_start", "week_end", "predicted_quantity",
    "confidence_lower", "confidence_upper", "active_customers",
]
PRODUCT_COLUMNS = [
    "product_id", "status", "model_type", "forecast_accuracy_estimate",
    "historical_weeks", "error", "stack_trace",
]
# models whose forecast is a flat level; the pooled trend multiplies these
FLAT_MODELS = ("baseline", "ses", "croston_sba", "tsb")
MODELS = ("baseline", "ses", "croston_sba", "tsb", "holt_damped", "holt_winters", "combination")
CALIBRATION_GRID = (0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4)
SHAPE_CLASSES = 3  # 0 short or flat, 1 intermittent, 2 regular (ForecastEngine._eligible)
STATE_FILE = "forecast_state.npz"  # the pooled state ForecastEngine.save writes


@dataclass
class WeeklyPanel:
    """Products x complete Monday-weeks matrices of demand and distinct customers."""

    product_ids: np.ndarray
    week_starts: pd.DatetimeIndex
    quantity: np.ndarray
    customers: np.ndarray
    categories: np.ndarray | None = None


@dataclass
class ForecastResult:
    """Horizon rows per successful product plus one status row per product."""

    predictions: pd.DataFrame
    products: pd.DataFrame
    diagnostics: dict = field(default_factory=dict)


# ---------------------------------------------------------------- panel


def last_complete_week_start(as_of) -> pd.Timestamp:
    """Monday of the last Monday-Sunday week that ends on or before as_of's date."""
    day = pd.Timestamp(as_of).normalize()
    return day - pd.Timedelta(days=(day.weekday() + 1) % 7 + 6)


def _monday(ts) -> pd.Timestamp:
    day = pd.Timestamp(ts).normalize()
    return day - pd.Timedelta(days=day.weekday())


def weekly_panel(orders: pd.DataFrame, as_of, start=None,
                 products: pd.DataFrame | None = None) -> WeeklyPanel:
    """Aggregate order lines to the weekly panel (complete weeks up to as_of only).

    Products appear if they have any order line in the window; catalogue products
    without orders are left out because there is nothing to forecast from.
    """
    missing = {"customer_id", "product_id", "order_date", "quantity"} - set(orders.columns)
    if missing:
        raise ValueError(f"orders lacks columns {sorted(missing)}; pass the orders contract frame")
    last = last_complete_week_start(as_of)
    dates = pd.to_datetime(orders["order_date"])
    keep = dates < last + WEEK
    if start is not None:
        keep &= dates >= _monday(start)
    frame = orders.loc[keep, ["product_id", "customer_id", "quantity"]].copy()
    day = dates[keep].dt.normalize()
    frame["week_start"] = day - pd.to_timedelta(day.dt.day_of_week, unit="D")
    weekly = (frame.groupby(["product_id", "week_start"], sort=False)
              .agg(quantity=("quantity", "sum"), customers=("customer_id", "nunique"))
              .reset_index())
    categories = None
    if products is not None and "category" in products.columns:
        categories = products.drop_duplicates("product_id").set_index("product_id")["category"]
    return panel_from_weekly(weekly, as_of, start=start, categories=categories)


def panel_from_weekly(weekly: pd.DataFrame, as_of, start=None,
                      categories: pd.Series | None = None) -> WeeklyPanel:
    """Pivot one-row-per-product-week sales into the dense panel.

    Missing product-weeks become zero; weeks after the last complete week before
    as_of are dropped so a partial current week never looks like a demand drop.
    """
    missing = {"product_id", "week_start", "quantity", "customers"} - set(weekly.columns)
    if missing:
        raise ValueError(f"weekly lacks columns {sorted(missing)}; expected product_id, "
                         "week_start, quantity, customers")
    last = last_complete_week_start(as_of)
    ws = pd.to_datetime(weekly["week_start"]).dt.normalize()
    if (ws.dt.day_of_week != 0).any():
        raise ValueError("week_start must be Mondays; truncate dates to the ISO week start")
    first = _monday(start) if start is not None else (ws.min() if len(ws) else last)
    keep = ((ws >= first) & (ws <= last)).to_numpy()
    if first > last:
        raise ValueError(f"start {first.date()} is after the last complete week {last.date()}")
    week_starts = pd.date_range(first, last, freq="7D")
    pids, rows = np.unique(weekly["product_id"].to_numpy(dtype=np.int64)[keep], return_inverse=True)
    cols = ((ws[keep] - first) // WEEK).to_numpy(dtype=np.int64)
    shape = (len(pids), len(week_starts))
    quantity, customers = np.zeros(shape), np.zeros(shape)
    np.add.at(quantity, (rows, cols), weekly["quantity"].to_numpy(dtype=float)[keep])
    np.add.at(customers, (rows, cols), weekly["customers"].to_numpy(dtype=float)[keep])
    cats = None
    if categories is not None:
        cats = categories.reindex(pids).fillna("unknown").astype(str).to_numpy()
    return WeeklyPanel(pids, week_starts, quantity, customers, cats)


# ---------------------------------------------------------------- models
# Each model takes Y (n, T) cleaned, first (n,) index of first sale, cutoffs (sorted,
# each in 1..T) and h; returns forecasts (n_cut, n, h) made from Y[:, :cutoff].


def _first_sale(y: np.ndarray) -> np.ndarray:
    pos = y > 0
    return np.where(pos.any(axis=1), pos.argmax(axis=1), y.shape[1])


def _best_by_cumulative_error(fc_by_param, err_by_param):
    """Pick per row and cutoff the parameter with the smallest in-sample one-step error."""
    fc = np.stack(fc_by_param)          # (k, n_cut, n, h)
    err = np.stack(err_by_param)        # (k, n_cut, n)
    pick = err.argmin(axis=0)           # (n_cut, n)
    return np.take_along_axis(fc, pick[None, :, :, None], axis=0)[0]


def _smooth(y, first, cutoffs, h, alpha, trend=0.0, phi=1.0):
    """SES (trend=0) or damped Holt; returns forecasts and cumulative one-step abs error."""
    n, T = y.shape
    level = np.zeros(n)
    slope = np.zeros(n)
    cum = np.zeros(n)
    steps = np.cumsum(phi ** np.arange(1, h + 1))
    fcs, errs = [], []
    want = set(cutoffs)
    for t in range(T):
        yt = y[:, t]
        started = t > first
        pred = level + phi * slope
        cum += np.where(started, np.abs(yt - pred), 0.0)
        new_level = alpha * yt + (1 - alpha) * pred
        slope = np.where(started, trend * (new_level - level) + (1 - trend) * phi * slope, 0.0)
        level = np.where(started, new_level, np.where(t == first, yt, level))
        if t + 1 in want:
            fcs.append(np.maximum(level[:, None] + slope[:, None] * steps[None, :], 0.0))
            errs.append(cum.copy())
    return np.stack(fcs), np.stack(errs)


def _ses(y, first, cutoffs, h, alphas=(0.05, 0.1, 0.2, 0.35, 0.6)):
    runs = [_smooth(y, first, cutoffs, h, a) for a in alphas]
    return _best_by_cumulative_error([r[0] for r in runs], [r[1] for r in runs])


def _holt_damped(y, first, cutoffs, h, grid=((0.1, 0.05, 0.9), (0.3, 0.1, 0.85), (0.2, 0.2, 0.8))):
    runs = [_smooth(y, first, cutoffs, h, a, b, p) for a, b, p in grid]
    return _best_by_cumulative_error([r[0] for r in runs], [r[1] for r in runs])


def _intermittent(y, first, cutoffs, h, alpha, beta=None):
    """Croston with SBA debiasing (beta None) or TSB (beta = probability smoothing)."""
    n, T = y.shape
    size = np.zeros(n)
    interval = np.ones(n)
    prob = np.full(n, 0.5)
    since = np.ones(n)
    fcs = []
    want = set(cutoffs)
    for t in range(T):
        yt = y[:, t]
        pos = yt > 0
        started = t > first
        hit = pos & started
        size = np.where(hit, size + alpha * (yt - size), np.where(t == first, yt, size))
        interval = np.where(hit, interval + alpha * (since - interval), interval)
        if beta is not None:
            prob = np.where(started, prob + beta * (pos - prob), prob)
        since = np.where(pos, 1.0, since + 1.0)
        if t + 1 in want:
            if beta is None:
                f = (1 - alpha / 2) * size / np.maximum(interval, 1.0)
            else:
                f = prob * size
            fcs.append(np.repeat(f[:, None], h, axis=1))
    return np.stack(fcs)


def _croston_sba(y, first, cutoffs, h):
    return 0.5 * (_intermittent(y, first, cutoffs, h, 0.1) + _intermittent(y, first, cutoffs, h, 0.2))


def _tsb(y, first, cutoffs, h):
    return 0.5 * (_intermittent(y, first, cutoffs, h, 0.1, 0.05)
                  + _intermittent(y, first, cutoffs, h, 0.2, 0.1))


def _baseline(y, first, cutoffs, h, window=8):
    """Mean of the last `window` weeks with the largest week capped at the second largest.

    One bulk order should not set the level for the next quarter.
    """
    n, T = y.shape
    fcs = []
    for c in cutoffs:
        lo = max(c - window, 0)
        block = y[:, lo:c]
        count = np.clip(c - np.maximum(first, lo), 1, None).astype(float)
        total = block.sum(axis=1)
        top2 = np.sort(block, axis=1)[:, -2:] if block.shape[1] >= 2 else np.zeros((n, 2))
        capped = total - top2[:, 1] + top2[:, 0]
        fcs.append(np.repeat((capped / count)[:, None], h, axis=1))
    return np.stack(fcs)


def _holt_winters(y, first, cutoffs, h, alpha=0.15, beta=0.02, gamma=0.15, phi=0.9):
    """Additive damped Holt-Winters; rows without two seasons before a cutoff get NaN."""
    n, T = y.shape
    rows = np.arange(n)
    begin = first + SEASON
    idx = np.clip(first[:, None] + np.arange(SEASON)[None, :], 0, T - 1)
    init = y[rows[:, None], idx]
    level = init.mean(axis=1)
    season = init - level[:, None]
    slope = np.zeros(n)
    steps = np.cumsum(phi ** np.arange(1, h + 1))
    fcs = []
    want = set(cutoffs)
    for t in range(T):
        run = t >= begin
        pos = (t - first) % SEASON
        s = season[rows, pos]
        yt = y[:, t]
        new_level = alpha * (yt - s) + (1 - alpha) * (level + phi * slope)
        new_slope = beta * (new_level - level) + (1 - beta) * phi * slope
        season[rows, pos] = np.where(run, gamma * (yt - new_level) + (1 - gamma) * s, s)
        level = np.where(run, new_level, level)
        slope = np.where(run, new_slope, slope)
        if t + 1 in want:
            ahead = (t + 1 - first[:, None] + np.arange(h)[None, :]) % SEASON
            f = level[:, None] + slope[:, None] * steps[None, :] + season[rows[:, None], ahead]
            ok = (t + 1 - first) >= 2 * SEASON
            fcs.append(np.where(ok[:, None], np.maximum(f, 0.0), np.nan))
    return np.stack(fcs)


_MODEL_FUNCS = {
    "baseline": _baseline, "ses": _ses, "croston_sba": _croston_sba,
    "tsb": _tsb, "holt_damped": _holt_damped, "holt_winters": _holt_winters,
}


# ---------------------------------------------------------------- pooled signals


def _pooled_trend(agg, cutoffs, h):
    """Pool total's damped-trend forecast over its flat level, (n_pool, n_cut, h)."""
    first = _first_sale(agg)
    trend, _ = _smooth(agg, first, cutoffs, h, 0.3, 0.1, 0.9)
    level, _ = _smooth(agg, first, cutoffs, h, 0.3)
    factor = np.where(level > 0, trend / np.maximum(level, 1e-9), 1.0)
    return np.moveaxis(factor, 1, 0)


def _pooled_season(y, first, members, cutoffs, h, window):
    """Last years' path after each cutoff relative to the level just before it, pooled.

    Same-store: only products already selling a year earlier count, so launches
    and delistings do not read as seasonality. NaN where no full year exists.
    """
    n_pool = members.shape[0]
    out = np.full((n_pool, len(cutoffs), h), np.nan)
    for k, c in enumerate(cutoffs):
        paths = []
        for lag in (SEASON, 2 * SEASON):
            a = c - lag
            if a - window < 0:
                break
            old = (first <= a - window)[None, :] & members          # (n_pool, n)
            base = old.astype(float) @ y[:, a - window:a].mean(axis=1)
            ahead = old.astype(float) @ y[:, a:a + h]              # (n_pool, h)
            ahead = np.vstack([np.convolve(np.pad(r, 1, mode="edge"), np.ones(3) / 3, "valid")
                               for r in ahead])
            paths.append(np.where(base[:, None] > 0, ahead / np.maximum(base[:, None], 1e-9), np.nan))
        if paths:
            stack = np.stack(paths)
            known = np.isfinite(stack)
            total = np.where(known, stack, 0.0).sum(axis=0)
            out[:, k] = np.where(known.any(axis=0), total / np.maximum(known.sum(axis=0), 1), np.nan)
    return out


# ---------------------------------------------------------------- engine


class ForecastEngine:
    """Per-product weekly forecasts with intervals, chosen by rolling-origin backtest.

    Shapes decide the candidate set (intermittent: Croston/SBA/TSB; long regular
    series: Holt-Winters; short or flat: robust baseline); the product's own
    backtest picks among them. The catalogue adds what one short series cannot show:
    last year's same-store path (or the pooled trend) for flat models, a level
    calibration per shape class, and the error quantiles behind the intervals.

    `fit` learns that pooled state once from the whole catalogue; `forecast` applies it
    to any subset, so a product's forecast depends only on its own series and the state,
    never on which products share its batch, shard or run.
    """

    def __init__(self, horizon: int = 12, interval_level: float = 0.8,
                 min_history_weeks: int = 4, short_history_weeks: int = 26,
                 backtest_origins: int = 3, backtest_step: int = 4,
                 intermittent_adi: float = 1.32, min_pool_products: int = 30,
                 pooled_strengths: tuple[float, ...] = (0.0, 0.5, 1.0),
                 season_window: int = 8, customer_window: int = 13,
                 bias_weight: float = 1.0, calibrate: bool = True, batch_size: int = 2000):
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1 week, got {horizon}")
        if not 0 < interval_level < 1:
            raise ValueError(f"interval_level must be in (0, 1), got {interval_level}")
        if min_history_weeks < 2:
            raise ValueError(f"min_history_weeks must be >= 2, got {min_history_weeks}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 product, got {batch_size}")
        # forecast and backtest
        self.horizon = horizon
        self.interval_level = interval_level
        self.min_history_weeks = min_history_weeks
        self.short_history_weeks = short_history_weeks
        self.backtest_origins = backtest_origins
        self.backtest_step = backtest_step
        self.intermittent_adi = intermittent_adi
        # pooled signals
        self.min_pool_products = min_pool_products
        self.pooled_strengths = tuple(pooled_strengths)
        self.season_window = season_window
        self.customer_window = customer_window
        self.bias_weight = bias_weight
        self.calibrate = calibrate
        # memory only: rows per vectorised pass; results do not depend on it
        self.batch_size = batch_size

    # -- pooled state

    def fit(self, panel: WeeklyPanel) -> "ForecastEngine":
        """Fit the pooled state on every product of the panel.

        Args:
            panel: the whole catalogue of a run (every eligible product), not a shard of it.

        Returns:
            self, with the state in `week_starts_`, `pool_categories_`, `pool_factor_`,
            `strength_`, `calibration_`, `lower_quantiles_` and `upper_quantiles_`.
        """
        _, y, _, broken = self._clean(panel)
        keep = np.flatnonzero(~broken)  # broken rows stay out of every pooled signal
        y = y[keep]
        categories = None if panel.categories is None else np.asarray(panel.categories).astype(str)[keep]
        self.week_starts_ = pd.DatetimeIndex(panel.week_starts)
        self.pool_categories_ = self._pool_categories(categories)
        pools = self._pool_index(categories, len(keep))
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            self.pool_factor_ = self._pool_factors(y, pools, self._cutoffs(y.shape[1]))
            # rows that crash any model are left out of the choices below
            done, _ = self._batches(lambda r: self._backtest(y[r], pools[r], self.pooled_strengths),
                                    np.arange(len(keep)))
            self._fit_choices(y, done)
        return self

    def _fit_choices(self, y, done):
        """Pooled strength, calibration and interval quantiles over every backtested row."""
        h = self.horizon
        totals = [sum(float(np.nansum(part["model_err"][k])) for _, part in done)
                  for k in range(len(self.pooled_strengths))]
        best = 0
        for k, total in enumerate(totals):
            if total < totals[best] - 1e-9:
                best = k
        self.strength_ = float(self.pooled_strengths[best])

        shape = np.concatenate([part["shape"] for _, part in done] or [np.zeros(0, dtype=np.int64)])
        cost = sum((self._calibration_costs(part["chosen"][best], part) for _, part in done),
                   np.zeros((SHAPE_CLASSES, len(CALIBRATION_GRID))))
        self.calibration_ = np.ones(SHAPE_CLASSES)
        if self.calibrate and len(self._cutoffs(y.shape[1])) > 1:
            # too few products of a shape to tell a level error from noise: no calibration
            enough = np.bincount(shape, minlength=SHAPE_CLASSES) >= self.min_pool_products
            self.calibration_[enough] = np.asarray(CALIBRATION_GRID)[cost[enough].argmin(axis=1)]

        z = np.concatenate([self._standardised_errors(
            y[rows], part, part["chosen"][best] * self.calibration_[part["shape"]][:, None, None])
            for rows, part in done] or [np.zeros((0, 0, h))], axis=1)       # (n_back, n, h)
        overall = self._error_quantiles(z.transpose(2, 0, 1).reshape(h, -1), None)
        self.lower_quantiles_ = np.empty((SHAPE_CLASSES, h))
        self.upper_quantiles_ = np.empty((SHAPE_CLASSES, h))
        for cls in range(SHAPE_CLASSES):
            zc = z[:, shape == cls].transpose(2, 0, 1).reshape(h, -1)
            self.lower_quantiles_[cls], self.upper_quantiles_[cls] = self._error_quantiles(zc, overall)

    def save(self, directory) -> Path:
        """Write the hyperparameters and the pooled state to `directory`/STATE_FILE (npz, no pickle)."""
        self._check_fitted()
        target = Path(directory) / STATE_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.part")
        with open(partial, "wb") as handle:
            np.savez(handle, hyperparameters=np.array(json.dumps(self._hyperparameters())),
                     week_starts=self.week_starts_.to_numpy(dtype="datetime64[ns]"),
                     pool_categories=self.pool_categories_.astype(str), pool_factor=self.pool_factor_,
                     strength=np.array(self.strength_), calibration=self.calibration_,
                     lower_quantiles=self.lower_quantiles_, upper_quantiles=self.upper_quantiles_)
        os.replace(partial, target)  # a reader never sees half a file
        return target

    @classmethod
    def load(cls, directory) -> "ForecastEngine":
        """An engine with the hyperparameters and pooled state `save` wrote to `directory`."""
        source = Path(directory) / STATE_FILE
        if not source.exists():
            raise FileNotFoundError(f"no fitted forecast state at {source}: fit the engine on the whole "
                                    "catalogue and save it there first")
        with np.load(source, allow_pickle=False) as data:
            engine = cls(**json.loads(data["hyperparameters"].item()))
            engine.week_starts_ = pd.DatetimeIndex(data["week_starts"])
            engine.pool_categories_ = data["pool_categories"]
            engine.pool_factor_ = data["pool_factor"]
            engine.strength_ = float(data["strength"])
            engine.calibration_ = data["calibration"]
            engine.lower_quantiles_ = data["lower_quantiles"]
            engine.upper_quantiles_ = data["upper_quantiles"]
        return engine

    def _hyperparameters(self) -> dict:
        names = ("horizon", "interval_level", "min_history_weeks", "short_history_weeks", "backtest_origins",
                 "backtest_step", "intermittent_adi", "min_pool_products", "pooled_strengths",
                 "season_window", "customer_window", "bias_weight", "calibrate", "batch_size")
        return {name: list(getattr(self, name)) if name == "pooled_strengths" else getattr(self, name)
                for name in names}

    def _check_fitted(self):
        if not hasattr(self, "strength_"):
            raise ValueError("the engine has no pooled state: fit(panel) it on the whole catalogue "
                             "(or load a fitted one) before forecasting")

    # -- forecasting

    def forecast(self, panel: WeeklyPanel) -> ForecastResult:
        """Forecast every product of the panel with the fitted pooled state.

        Args:
            panel: any products (a shard, one product, the whole catalogue) on the fitted
                weeks; a panel starting later is read as zero demand before its first week.

        Returns:
            Horizon rows per successful product and one status row per product; a
            product's failure becomes its status row and the batch goes on.
        """
        self._check_fitted()
        panel = self._on_fitted_weeks(panel)
        raw, y, cust, broken = self._clean(panel)
        out = self._empty_output(y)
        pools = self._pool_index(None if panel.categories is None else np.asarray(panel.categories).astype(str),
                                 len(y))
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            done, crashed = self._batches(lambda r: self._apply(y[r], cust[r], pools[r]), np.flatnonzero(~broken))
        for rows, part in done:
            for key in ("pick", "final", "lower", "upper", "customers", "accuracy"):
                out[key][rows] = part[key]
        for row, (message, trace) in crashed.items():
            out["crashed"][row], out["trace"][row] = message, trace
        return self._assemble(panel, out, broken, raw)

    def _on_fitted_weeks(self, panel):
        weeks = pd.DatetimeIndex(panel.week_starts)
        fitted = self.week_starts_
        if weeks.equals(fitted):
            return panel
        if len(weeks) and len(weeks) < len(fitted) and weeks.equals(fitted[len(fitted) - len(weeks):]):
            pad = ((0, 0), (len(fitted) - len(weeks), 0))  # missing weeks are zero demand
            return WeeklyPanel(panel.product_ids, fitted, np.pad(np.asarray(panel.quantity, dtype=float), pad),
                               np.pad(np.asarray(panel.customers, dtype=float), pad), panel.categories)
        span = f"{weeks[0].date()}..{weeks[-1].date()}" if len(weeks) else "no weeks"
        raise ValueError(f"panel weeks ({span}) are not the fitted weeks {fitted[0].date()}.."
                         f"{fitted[-1].date()} or a suffix of them; build both panels with the same "
                         "as_of and start")

    def _clean(self, panel):
        """Raw quantities and the cleaned demand and customers; rows with infinities are `broken`."""
        raw = np.asarray(panel.quantity, dtype=float)
        n, T = raw.shape
        if len(panel.product_ids) != n or len(panel.week_starts) != T:
            raise ValueError("panel shapes disagree: quantity must be products x weeks")
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            y = np.clip(np.nan_to_num(raw, nan=0.0, posinf=np.inf, neginf=0.0), 0.0, None)
            cust = np.clip(np.nan_to_num(np.asarray(panel.customers, dtype=float),
                                         nan=0.0, posinf=np.inf, neginf=0.0), 0.0, None)
        broken = ~np.isfinite(y).all(axis=1) | ~np.isfinite(cust).all(axis=1)
        y[broken] = 0.0  # reported as errors, never forecast
        cust[broken] = 0.0
        return raw, y, cust, broken

    def _empty_output(self, y):
        n, h = y.shape[0], self.horizon
        first = _first_sale(y)
        blank = np.full((n, h), np.nan)
        return dict(first=first, hist=y.shape[1] - first, pick=np.zeros(n, dtype=np.int64),
                    final=blank, lower=blank.copy(), upper=blank.copy(), customers=blank.copy(),
                    accuracy=np.full(n, np.nan), crashed=np.full(n, None, dtype=object),
                    trace=np.full(n, None, dtype=object))

    def _batches(self, func, rows):
        """`func` over `rows` batch_size at a time: [(rows, result)] and {row: (error, traceback)}."""
        done, crashed = [], {}
        for begin in range(0, len(rows), self.batch_size):
            self._isolate(func, rows[begin:begin + self.batch_size], done, crashed)
        return done, crashed

    def _isolate(self, func, rows, done, crashed):
        """Run `func` on the rows at once; if it raises, bisect so only the culprit rows fail."""
        try:
            part = func(rows)
        except Exception as exc:  # noqa: BLE001 - a product's failure must not stop the batch
            if len(rows) == 1:
                crashed[int(rows[0])] = (f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc)))
                return
            mid = len(rows) // 2
            self._isolate(func, rows[:mid], done, crashed)
            self._isolate(func, rows[mid:], done, crashed)
            return
        done.append((rows, part))

    def _cutoffs(self, T):
        """Backtest cutoffs (oldest first) and T itself, the forecast origin."""
        return sorted({T - k * self.backtest_step for k in range(1, self.backtest_origins + 1)
                       if T - k * self.backtest_step > self.min_history_weeks} | {T})

    def _backtest(self, y, pools, strengths):
        """Each row's model pick and chosen forecasts at every cutoff, per pooled strength.

        Row-wise given the fitted pool factors: a row's result never depends on its batch.
        """
        n, T = y.shape
        h = self.horizon
        first = _first_sale(y)
        hist = T - first
        cutoffs = self._cutoffs(T)
        fcs = self._run_models(y, first, cutoffs, h)          # (m, n_cut, n, h)
        eligible, shape = self._eligible(y, first, hist)     # (m, n), (n,)
        combo = MODELS.index("combination")
        members = eligible[:combo, None, :, None] & np.isfinite(fcs[:combo])
        fcs[combo] = np.where(members, fcs[:combo], 0.0).sum(axis=0) / members.sum(axis=0)
        eligible[combo] = eligible[:combo].sum(axis=0) >= 2

        back = cutoffs[:-1]
        # actual windows per backtest cutoff; weeks past T are masked
        act = np.zeros((len(back), n, h))
        seen = np.zeros((len(back), h), dtype=bool)
        for k, c in enumerate(back):
            w = min(h, T - c)
            act[k, :, :w] = y[:, c:c + w]
            seen[k, :w] = True
        valid = np.array([(c - first) >= self.min_history_weeks for c in back], dtype=bool).reshape(len(back), n)
        flat = np.array([m in FLAT_MODELS for m in MODELS])
        factor = np.moveaxis(self.pool_factor_[pools], 0, 1)  # (n_cut, n, h)
        rows = np.arange(n)
        picks, chosen, model_err = [], [], []
        for strength in strengths:
            cand = np.where(flat[:, None, None, None], fcs * (factor ** strength)[None], fcs)
            err = self._backtest_errors(cand[:, :len(back)], act, seen, valid, eligible, self.bias_weight)
            pick, err = self._select(err, eligible)
            picks.append(pick)
            chosen.append(cand[pick, :, rows])               # (n, n_cut, h)
            model_err.append(err)
        return dict(first=first, shape=shape, act=act, seen=seen, valid=valid, pick=picks, chosen=chosen,
                    model_err=model_err)

    def _apply(self, y, cust, pools):
        """Forecasts, intervals, accuracy and customers of a batch of rows under the fitted state."""
        T = y.shape[1]
        part = self._backtest(y, pools, (self.strength_,))
        shape, act, seen, valid = part["shape"], part["act"], part["seen"], part["valid"]
        chosen = part["chosen"][0] * self.calibration_[shape][:, None, None]
        final = chosen[:, -1]
        n_back = act.shape[0]
        abs_err = np.abs(act - np.moveaxis(chosen[:, :n_back], 0, 1)) * seen[:, None, :]
        mask = valid[:, :, None] & seen[:, None, :]
        denom = (act * mask).sum(axis=(0, 2))
        wape = np.where(denom > 0, (abs_err * mask).sum(axis=(0, 2)) / np.maximum(denom, 1e-12), np.nan)
        s = self._scale(y, part["first"], T)[:, None]
        lower = np.clip(final + self.lower_quantiles_[shape] * s, 0.0, final)
        upper = np.maximum(final + self.upper_quantiles_[shape] * s, final)
        return dict(pick=part["pick"][0], final=final, lower=lower, upper=upper,
                    customers=self._customers(y, cust, final), accuracy=np.clip(1.0 - wape, 0.0, 1.0))

    def _run_models(self, y, first, cutoffs, h):
        out = np.full((len(MODELS), len(cutoffs), y.shape[0], h), np.nan)
        long_rows = np.flatnonzero((y.shape[1] - first) >= 2 * SEASON)
        for m, name in enumerate(MODELS):
            if name == "holt_winters":
                if len(long_rows):
                    out[m][:, long_rows] = _holt_winters(y[long_rows], first[long_rows], cutoffs, h)
            elif name in _MODEL_FUNCS:
                out[m] = _MODEL_FUNCS[name](y, first, cutoffs, h)
        return out

    def _eligible(self, y, first, hist):
        """Candidate models per product from the series' shape (ADI, length, flatness)."""
        n, T = y.shape
        nonzero = (y > 0).sum(axis=1)
        adi = hist / np.maximum(nonzero, 1)
        recent = y[:, max(T - self.short_history_weeks, 0):]
        flat_series = recent.std(axis=1) < 1e-9
        short = hist < self.short_history_weeks
        intermittent = (adi > self.intermittent_adi) & ~short & ~flat_series
        regular = ~intermittent & ~short & ~flat_series
        long = hist >= 2 * SEASON
        shape = np.where(intermittent, 1, np.where(regular, 2, 0))
        e = {name: np.zeros(n, dtype=bool) for name in MODELS}
        e["baseline"][:] = True
        e["ses"] |= short | regular
        e["croston_sba"] |= intermittent
        e["tsb"] |= intermittent
        e["holt_damped"] |= regular
        e["holt_winters"] |= regular & long
        return np.stack([e[name] for name in MODELS]), shape

    def _calibration_costs(self, chosen, part):
        """Backtest cost (shape class x CALIBRATION_GRID) of each level multiplier on a batch.

        Each product's own selection is noisy and systematically low on skewed demand;
        summed over the catalogue's products of one shape the level error is measurable.
        """
        act = part["act"]
        fc = np.moveaxis(chosen[:, :act.shape[0]], 0, 1)     # (n_back, n, h)
        w = (part["valid"][:, :, None] & part["seen"][:, None, :]).astype(float)
        cost = np.zeros((SHAPE_CLASSES, len(CALIBRATION_GRID)))
        for cls in range(SHAPE_CLASSES):
            rows = part["shape"] == cls
            for j, k in enumerate(CALIBRATION_GRID):
                diff = (k * fc[:, rows] - act[:, rows]) * w[:, rows]
                cost[cls, j] = np.abs(diff).sum() + self.bias_weight * np.abs(diff.sum(axis=2)).sum()
        return cost

    def _pool_categories(self, categories):
        """Categories with a pool of their own: enough products, and at least two such."""
        if categories is None:
            return np.array([], dtype=str)
        names, counts = np.unique(categories, return_counts=True)
        big = (counts >= self.min_pool_products) & (names != "unknown")
        return names[big] if big.sum() >= 2 else names[:0]

    def _pool_index(self, categories, n):
        """Row -> pool: 1 + its category's place in pool_categories_; 0 (the whole catalogue) when
        the category has no pool of its own, or was not seen at fit time."""
        names = self.pool_categories_
        if categories is None or not len(names):
            return np.zeros(n, dtype=np.int64)
        at = np.minimum(np.searchsorted(names, categories), len(names) - 1)
        return np.where(names[at] == categories, at + 1, 0).astype(np.int64)

    def _pool_factors(self, y, pools, cutoffs):
        """Multiplier (n_pool, n_cut, h) taking a flat level to the pool's expected path.

        One product's few weeks cannot show the ramp into a seasonal peak; its pool
        can: last year's same-store path where a year exists, else the pool total's
        damped trend.
        """
        h = self.horizon
        members = pools[None, :] == np.arange(len(self.pool_categories_) + 1)[:, None]
        members[0] = True  # pool 0 is the whole catalogue
        agg = members.astype(float) @ y
        factor = _pooled_trend(agg, cutoffs, h)
        season = _pooled_season(y, _first_sale(y), members, cutoffs, h, self.season_window)
        factor = np.where(np.isfinite(season), season, factor)
        return np.clip(factor, 0.3, 3.0)

    @staticmethod
    def _backtest_errors(cand, act, seen, valid, eligible, bias_weight):
        """Absolute error per model and product over the valid backtest windows."""
        diff = np.abs(cand - act[None]) * seen[None, :, None, :]
        # absolute error plus absolute window bias: plain MAE rewards forecasting zero
        # for intermittent series, the bias term keeps the level honest
        bias = np.abs(((cand - act[None]) * seen[None, :, None, :]).sum(axis=3))
        per_cut = np.nan_to_num(diff.sum(axis=3) + bias_weight * bias, nan=np.inf)  # (m, n_back, n)
        err = (per_cut * valid[None]).sum(axis=1)
        err = np.where(np.isnan(err), np.inf, err)
        return np.where(eligible, err, np.inf)

    @staticmethod
    def _select(err, eligible):
        """Lowest backtest error wins; rows without a usable backtest keep a shape default."""
        pick = err.argmin(axis=0)
        best = err.min(axis=0)
        no_backtest = ~np.isfinite(best)
        default = np.where(eligible[MODELS.index("croston_sba")], MODELS.index("croston_sba"),
                           np.where(eligible[MODELS.index("ses")], MODELS.index("ses"), 0))
        pick = np.where(no_backtest, default, pick)
        return pick, np.where(np.isfinite(best), best, np.nan)

    def _standardised_errors(self, y, part, chosen):
        """Backtest errors over each product's naive MAE, (n_back, n, h); NaN where unusable.

        Split-conformal style: pooled over the products of one shape class they give the
        interval quantiles, so sparse series borrow calibration from the catalogue instead
        of trusting a handful of own residuals.
        """
        act, first = part["act"], part["first"]
        back = self._cutoffs(y.shape[1])[:-1]
        if not back:
            return np.full((0, len(y), self.horizon), np.nan)
        scales = np.stack([self._scale(y, first, c) for c in back])        # (n_back, n)
        z = (act - np.moveaxis(chosen[:, :len(back)], 0, 1)) / np.maximum(scales, 1e-9)[:, :, None]
        usable = part["valid"][:, :, None] & part["seen"][:, None, :] & (scales > 0)[:, :, None]
        return np.where(usable, z, np.nan)

    def _error_quantiles(self, z, fallback, min_count=30):
        """Per-step quantiles of standardised errors, widening with the step."""
        h = z.shape[0]
        if fallback is None:
            fallback = (np.full(h, -1.28), np.full(h, 1.28))  # normal 80% until data says more
        qlo, qhi = np.array(fallback[0], dtype=float), np.array(fallback[1], dtype=float)
        enough = np.isfinite(z).sum(axis=1) >= min_count
        if enough.any():
            lo_q, hi_q = (1 - self.interval_level) / 2, (1 + self.interval_level) / 2
            qlo[enough] = np.nanquantile(z[enough], lo_q, axis=1)
            qhi[enough] = np.nanquantile(z[enough], hi_q, axis=1)
            # later steps without backtest errors reuse the widest calibrated step
            qlo[~enough] = np.minimum(qlo[~enough], qlo[enough].min())
            qhi[~enough] = np.maximum(qhi[~enough], qhi[enough].max())
        return (np.minimum(np.minimum.accumulate(qlo), 0.0),
                np.maximum(np.maximum.accumulate(qhi), 0.0))

    @staticmethod
    def _scale(y, first, c):
        """Mean absolute one-week change since first sale, before cutoff c (MASE scale)."""
        d = np.abs(np.diff(y[:, :c], axis=1))
        after = np.arange(1, c)[None, :] > first[:, None]
        cnt = after.sum(axis=1)
        mae = (d * after).sum(axis=1) / np.maximum(cnt, 1)
        level = (y[:, :c] * (np.arange(c)[None, :] >= first[:, None])).sum(axis=1) / np.maximum(c - first, 1)
        return np.maximum(mae, 0.05 * level)  # floor keeps a constant series' interval open

    def _customers(self, y, cust, final):
        """Active customers follow the quantity forecast at the recent customers-per-unit rate."""
        w = self.customer_window
        qs = y[:, -w:].sum(axis=1)
        cs = cust[:, -w:].sum(axis=1)
        rate = np.where(qs > 0, cs / np.maximum(qs, 1e-12), 0.0)
        return final * rate[:, None]

    # -- output

    def _assemble(self, panel, out, broken, raw):
        pids = np.asarray(panel.product_ids, dtype=np.int64)
        n = len(pids)
        h = self.horizon
        hist = out["hist"]
        status = np.full(n, "success", dtype=object)
        errors = np.full(n, None, dtype=object)
        traces = np.full(n, None, dtype=object)
        model = np.array(MODELS, dtype=object)[out["pick"]]
        accuracy = out["accuracy"].astype(float)
        no_fc = hist < self.min_history_weeks
        status[no_fc] = "no_forecast"
        for i in np.flatnonzero(no_fc):
            errors[i] = ("no positive demand in the panel" if hist[i] == 0 else
                         f"only {hist[i]} weeks since first sale; need {self.min_history_weeks}")
        for i in np.flatnonzero(broken | ~np.isfinite(out["final"]).all(axis=1)
                                | ~np.isfinite(out["upper"]).all(axis=1)):
            if no_fc[i] and not broken[i]:
                continue
            try:
                if out["crashed"][i] is not None:
                    raise RuntimeError(f"product {pids[i]}: forecast failed: {out['crashed'][i]}")
                _check_finite(pids[i], raw[i], out["final"][i], out["upper"][i])
            except (ValueError, RuntimeError) as exc:
                status[i], errors[i], traces[i] = "error", str(exc), out["trace"][i]
        failed = status != "success"
        model = np.where(failed, None, model)
        accuracy[failed] = np.nan
        products = pd.DataFrame({
            "product_id": pids, "status": status, "model_type": model,
            "forecast_accuracy_estimate": accuracy, "historical_weeks": hist.astype(np.int64),
            "error": errors, "stack_trace": traces,
        }, columns=PRODUCT_COLUMNS)
        ok = np.flatnonzero(~failed)
        starts = panel.week_starts[-1] + WEEK * np.arange(1, h + 1) if len(panel.week_starts) else \
            pd.DatetimeIndex([])
        week_start = np.tile(np.asarray(starts, dtype="datetime64[ns]"), len(ok))
        predictions = pd.DataFrame({
            "product_id": np.repeat(pids[ok], h),
            "week_start": week_start,
            "week_end": week_start + np.timedelta64(6, "D"),
            "predicted_quantity": out["final"][ok].ravel(),
            "confidence_lower": out["lower"][ok].ravel(),
            "confidence_upper": out["upper"][ok].ravel(),
            "active_customers": out["customers"][ok].ravel(),
        }, columns=PREDICTION_COLUMNS)
        diagnostics = {"pooled_strength": self.strength_,
                       "calibration": {cls: float(m) for cls, m in enumerate(self.calibration_)}}
        return ForecastResult(predictions, products, diagnostics)


def _check_finite(product_id, raw_row, pred, upper):
    if np.isinf(raw_row).any():
        raise ValueError(f"product {product_id}: weekly quantity has infinite values; "
                         "fix the source rows (NaN is treated as 0, inf is not)")
    if not (np.isfinite(pred).all() and np.isfinite(upper).all()):
        raise ValueError(f"product {product_id}: model produced non-finite forecasts; "
                         "inspect its weekly series")
