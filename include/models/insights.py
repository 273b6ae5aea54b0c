"""Order insights: per-user order statistics in, a short digest (summary + tips) out.

Two generators share one small interface, ``generate(stats) -> frame``:

* ``RulesGenerator`` -- deterministic, no network: states the user's numbers (orders, spend,
  category shares, variety, order rhythm) and suggests a concrete best seller from a popular
  category the user rarely or never buys.
* ``LLMGenerator``   -- asks an OpenAI-compatible chat model for the same digest. It takes the
  completion function as an argument (messages in, reply text out), so this module stays free of
  I/O; the HTTP client with its key pool lives in ``include.runtime.llm_client``.

Every digest, whoever wrote it, passes ``check_insight`` (types, lengths, number of tips) before
it leaves ``generate``; a user whose digest fails gets an error row instead, and the batch goes
on. Exceptions listed in ``abort_on`` (all API keys exhausted) are not caught: they end the batch.

The statistics frame (``STATS_COLUMNS``, one row per user and category, the user's totals
repeated, as query ``order_insights_stats`` returns it) holds no dates: the rhythm is given as
days since the last order and integer sums of the gaps between order days, so nothing here needs
a clock or an ``as_of``.
"""
from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pandas as pd

STATS_COLUMNS = ("customer_id", "orders", "spend", "items", "products", "categories", "days_since_last_order",
                 "gaps", "gap_days_sum", "gap_days_sq_sum", "category", "category_orders", "category_items",
                 "category_spend")
CATALOG_COLUMNS = ("category", "category_buyers", "product_id", "product_name", "price", "product_buyers")
OUTPUT_COLUMNS = ["customer_id", "summary", "tips", "error"]

MAX_SUMMARY_CHARS = 400
MAX_TIP_CHARS = 300
MIN_TIPS, MAX_TIPS = 1, 5
_NAME_CHARS = 60  # category and product names are cut to this in generated text


class InsightFormatError(ValueError):
    """A digest that does not have the cached shape: {summary: str, tips: [str, ...]} within limits."""


@dataclass(frozen=True)
class UserProfile:
    """One user's statistics, derived once from the frame's rows."""

    customer_id: int
    orders: int
    spend: float
    items: float
    products: int
    categories: int
    days_since_last_order: int
    mean_gap_days: float | None  # None with fewer than two orders
    gap_std_days: float | None
    shares: tuple[tuple[str, float, int], ...]  # (category, share of spend, orders), largest share first

    @property
    def average_order(self) -> float:
        return self.spend / self.orders if self.orders else 0.0

    def facts(self) -> dict[str, Any]:
        """The statistics as plain JSON-able facts (what the LLM is shown)."""
        return {"orders": self.orders, "spend": round(self.spend, 2), "average_order_value": round(self.average_order, 2),
                "items": round(self.items, 2), "distinct_products": self.products,
                "distinct_categories": self.categories, "days_since_last_order": self.days_since_last_order,
                "mean_days_between_orders": None if self.mean_gap_days is None else round(self.mean_gap_days, 1),
                "stddev_days_between_orders": None if self.gap_std_days is None else round(self.gap_std_days, 1),
                "category_shares": [{"category": c, "share_of_spend": round(s, 3), "orders": o}
                                    for c, s, o in self.shares]}


def profiles(stats: pd.DataFrame) -> list[UserProfile]:
    """One ``UserProfile`` per user of a statistics frame, in customer_id order.

    Args:
        stats: rows with ``STATS_COLUMNS``; one per user and category.
    Returns:
        The profiles; category shares are shares of spend (of items when the user spent nothing).
    """
    missing = [c for c in STATS_COLUMNS if c not in stats.columns]
    if missing:
        raise ValueError(f"statistics frame lacks columns {missing}; expected {list(STATS_COLUMNS)} "
                         "(the columns of query order_insights_stats)")
    found = []
    for customer_id, rows in stats.sort_values(["customer_id", "category"]).groupby("customer_id", sort=True):
        first = rows.iloc[0]
        weights = rows["category_spend"].astype(float).to_numpy()
        if weights.sum() <= 0:
            weights = rows["category_items"].astype(float).to_numpy()
        total = weights.sum()
        shares = sorted(((str(c), float(w / total) if total > 0 else 0.0, int(o))
                         for c, w, o in zip(rows["category"], weights, rows["category_orders"])),
                        key=lambda s: (-s[1], s[0]))
        gaps = int(first["gaps"])
        mean = std = None
        if gaps > 0:
            mean = float(first["gap_days_sum"]) / gaps
            std = math.sqrt(max(float(first["gap_days_sq_sum"]) / gaps - mean * mean, 0.0))
        found.append(UserProfile(
            customer_id=int(customer_id), orders=int(first["orders"]), spend=float(first["spend"]),
            items=float(first["items"]), products=int(first["products"]), categories=int(first["categories"]),
            days_since_last_order=int(first["days_since_last_order"]), mean_gap_days=mean, gap_std_days=std,
            shares=tuple(shares)))
    return found


def check_insight(summary: Any, tips: Any) -> tuple[str, list[str]]:
    """The digest trimmed of surrounding blanks, or ``InsightFormatError`` saying what is wrong."""
    if not isinstance(summary, str) or not summary.strip():
        raise InsightFormatError(f"summary must be a non-empty string, got {type(summary).__name__}")
    summary = summary.strip()
    if len(summary) > MAX_SUMMARY_CHARS:
        raise InsightFormatError(f"summary has {len(summary)} characters; at most {MAX_SUMMARY_CHARS} are allowed")
    if not isinstance(tips, list):
        raise InsightFormatError(f"tips must be a list of strings, got {type(tips).__name__}")
    if not MIN_TIPS <= len(tips) <= MAX_TIPS:
        raise InsightFormatError(f"expected {MIN_TIPS} to {MAX_TIPS} tips, got {len(tips)}")
    cleaned = []
    for i, tip in enumerate(tips):
        if not isinstance(tip, str) or not tip.strip():
            raise InsightFormatError(f"tip {i} must be a non-empty string, got {tip!r:.80}")
        if len(tip.strip()) > MAX_TIP_CHARS:
            raise InsightFormatError(f"tip {i} has {len(tip.strip())} characters; at most {MAX_TIP_CHARS} are allowed")
        cleaned.append(tip.strip())
    return summary, cleaned


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def parse_reply(text: str) -> tuple[str, list[str]]:
    """A model's reply -> checked (summary, tips); the reply must be one JSON object, fences allowed."""
    if not isinstance(text, str):
        raise InsightFormatError(f"reply must be text, got {type(text).__name__}")
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise InsightFormatError(f"reply is not JSON ({exc.msg} at {exc.pos}): {text[:120]!r}") from None
    if not isinstance(data, dict) or not {"summary", "tips"} <= set(data):
        raise InsightFormatError(f"reply must be an object with keys summary and tips, got {body[:120]!r}")
    return check_insight(data["summary"], data["tips"])


def _name(text: Any) -> str:
    text = str(text)
    return text if len(text) <= _NAME_CHARS else text[:_NAME_CHARS - 1] + "…"


def _plural(n: float, word: str, plural: str | None = None) -> str:
    return f"{n:g} {word if n == 1 else plural or word + 's'}"


class InsightGenerator(ABC):
    """Statistics frame in, one digest per user out (``OUTPUT_COLUMNS``); see the module docstring."""

    name = "base"

    def __init__(self, catalog: pd.DataFrame | None = None, window_days: int = 30,
                 abort_on: tuple[type[BaseException], ...] = ()) -> None:
        # what may be suggested: best seller per category, busiest category first (CATALOG_COLUMNS)
        self.catalog = catalog if catalog is not None else pd.DataFrame(columns=list(CATALOG_COLUMNS))
        self.window_days = window_days
        # errors that end the whole batch instead of failing one user
        self.abort_on = tuple(abort_on)

    def generate(self, stats: pd.DataFrame) -> pd.DataFrame:
        """One row per user: customer_id, summary, tips (list of str) and error (None when fine)."""
        rows = []
        for profile in profiles(stats):
            try:
                summary, tips = check_insight(*self.write(profile))
                rows.append((profile.customer_id, summary, tips, None))
            except self.abort_on:
                raise
            except Exception as exc:  # one user's failure is counted, the batch goes on
                rows.append((profile.customer_id, None, None, f"{type(exc).__name__}: {exc}"[:1000]))
        columns = list(zip(*rows)) if rows else [()] * len(OUTPUT_COLUMNS)
        # object columns keep None as None (pandas would infer a string dtype holding NaN)
        return pd.DataFrame({"customer_id": pd.Series(columns[0], dtype="int64"),
                             **{name: pd.Series(values, dtype=object)
                                for name, values in zip(OUTPUT_COLUMNS[1:], columns[1:])}})

    @abstractmethod
    def write(self, profile: UserProfile) -> tuple[str, list[str]]:
        """(summary, tips) for one user."""

    def suggestion(self, profile: UserProfile, rare_share: float) -> dict[str, Any] | None:
        """The best seller of the busiest catalogue category the user rarely buys (share below
        `rare_share`); categories bought a little come before categories never bought."""
        if self.catalog.empty:
            return None
        share = {c: s for c, s, _ in profile.shares}
        candidates = self.catalog[self.catalog["category"].map(lambda c: share.get(c, 0.0) < rare_share)]
        if candidates.empty:
            return None
        bought = candidates["category"].map(lambda c: c in share)
        pick = candidates[bought].iloc[0] if bought.any() else candidates.iloc[0]
        return {"category": str(pick["category"]), "share": share.get(pick["category"], 0.0),
                "category_buyers": int(pick["category_buyers"]), "product_id": int(pick["product_id"]),
                "product_name": str(pick["product_name"]),
                "price": None if pd.isna(pick["price"]) else float(pick["price"]),
                "product_buyers": int(pick["product_buyers"])}


class RulesGenerator(InsightGenerator):
    """Deterministic digests from the statistics alone; the default generator."""

    name = "rules"

    def __init__(self, catalog: pd.DataFrame | None = None, window_days: int = 30,
                 abort_on: tuple[type[BaseException], ...] = (),
                 # thresholds of the rules
                 concentrated_share: float = 0.5, rare_share: float = 0.1, regular_cv: float = 0.5,
                 max_tips: int = 4) -> None:
        super().__init__(catalog, window_days, abort_on)
        self.concentrated_share = concentrated_share
        self.rare_share = rare_share
        self.regular_cv = regular_cv
        self.max_tips = max(MIN_TIPS, min(max_tips, MAX_TIPS))

    def write(self, p: UserProfile) -> tuple[str, list[str]]:
        top, top_share, top_orders = p.shares[0] if p.shares else ("other", 0.0, 0)
        summary = (f"{_plural(p.orders, 'order')} in the last {self.window_days} days, {p.spend:,.2f} spent "
                   f"({p.average_order:,.2f} per order) on {_plural(p.products, 'product')} from "
                   f"{_plural(p.categories, 'category', 'categories')}; "
                   f"mostly {_name(top)} ({top_share:.0%} of your spend).")
        tips = [self._concentration(p, top, top_share, top_orders)]
        suggestion = self.suggestion(p, self.rare_share)
        if suggestion:
            tips.append(self._suggest(suggestion))
        rhythm = self._rhythm(p)
        if rhythm:
            tips.append(rhythm)
        tips.append(self._variety(p))
        return summary, tips[:self.max_tips]

    def _concentration(self, p: UserProfile, top: str, share: float, orders: int) -> str:
        if share >= self.concentrated_share:
            return (f"{_name(top)} takes {share:.0%} of your spend and appears in {orders} of your {p.orders} orders: "
                    "buying it in fewer, larger orders saves delivery costs.")
        spread = ", ".join(f"{_name(c)} {s:.0%}" for c, s, _ in p.shares[:3])
        return f"Your spend is spread over several categories ({spread}); no single one dominates."

    @staticmethod
    def _suggest(s: dict[str, Any]) -> str:
        price = f" at {s['price']:,.2f}" if s["price"] is not None else ""
        product = f"{_name(s['product_name'])}{price}"
        if s["share"] > 0:
            return (f"You rarely buy {_name(s['category'])} ({s['share']:.0%} of your spend); its best seller "
                    f"right now is {product}, bought by {_plural(s['product_buyers'], 'customer')} recently.")
        return (f"You have not bought from {_name(s['category'])} lately, where "
                f"{_plural(s['category_buyers'], 'customer')} shopped recently: try its best seller, {product}.")

    def _rhythm(self, p: UserProfile) -> str | None:
        if p.mean_gap_days is None or p.mean_gap_days < 1:  # none, or several orders a day: no rhythm to tell
            return None
        mean, std = p.mean_gap_days, p.gap_std_days or 0.0
        if std / mean <= self.regular_cv:
            due = round(mean - p.days_since_last_order)
            when = (f"in about {_plural(due, 'day')}" if due > 0 else "now" if due == 0
                    else f"{_plural(-due, 'day')} ago")
            return (f"You order regularly, about every {mean:.0f} days; going by that rhythm your next order "
                    f"is due {when}.")
        return (f"Your orders come every {mean:.0f} days on average but vary by ±{std:.0f} days; a fixed "
                "order day would make sure staples never run out.")

    @staticmethod
    def _variety(p: UserProfile) -> str:
        if p.products <= p.orders:
            return (f"You keep re-ordering the same {_plural(p.products, 'product')} across {p.orders} orders: "
                    "a saved basket or repeat order would make that one click.")
        return (f"You tried {p.products} different products in {p.orders} orders "
                f"({p.items / p.orders:.1f} items per order): mark favourites to find them again quickly.")


SYSTEM_PROMPT = (
    "You write short, specific shopping digests for one customer of an online shop from their order "
    "statistics. Answer with one JSON object only, no prose around it: "
    '{"summary": "<one or two sentences, at most 300 characters>", '
    '"tips": ["<2 to 4 tips, each at most 200 characters>"]}. '
    "Use the numbers given (shares as percentages, spend with two decimals); do not invent products: "
    "suggest only the products listed under suggestions.")


class LLMGenerator(InsightGenerator):
    """Digests written by a chat model; `complete(messages) -> reply text` does the HTTP."""

    name = "llm"

    def __init__(self, complete: Callable[[list[dict[str, str]]], str], catalog: pd.DataFrame | None = None,
                 window_days: int = 30, abort_on: tuple[type[BaseException], ...] = (),
                 rare_share: float = 0.1, system_prompt: str = SYSTEM_PROMPT) -> None:
        super().__init__(catalog, window_days, abort_on)
        self.complete = complete
        self.rare_share = rare_share
        self.system_prompt = system_prompt

    def messages(self, p: UserProfile) -> list[dict[str, str]]:
        suggestion = self.suggestion(p, self.rare_share)
        facts = {"window_days": self.window_days, **p.facts(),
                 "suggestions": [suggestion] if suggestion else []}
        return [{"role": "system", "content": self.system_prompt},
                {"role": "user", "content": json.dumps(facts, sort_keys=True)}]

    def write(self, p: UserProfile) -> tuple[str, list[str]]:
        return parse_reply(self.complete(self.messages(p)))


def insight_document(summary: str, tips: Sequence[str], generated_at: str, generator: str) -> str:
    """The cached JSON of one user, checked once more right before it is written."""
    summary, tips = check_insight(summary, list(tips))
    return json.dumps({"summary": summary, "tips": tips, "generated_at": generated_at, "generator": generator})
