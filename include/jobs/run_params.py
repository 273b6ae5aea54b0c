"""Run settings shared by the jobs: the as-of date and params that fall back to settings."""
from __future__ import annotations

import datetime as dt
from typing import Any

from include.runtime import config


def as_of_date(raw: str | None, run_date: dt.date, today: dt.date) -> dt.date:
    """The date a run computes as of: `raw` (YYYY-MM-DD) or the run's date; never in the future."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        as_of = dt.date.fromisoformat(raw) if raw else run_date
    except ValueError:
        raise AirflowFailException(f"as_of_date must be a date YYYY-MM-DD, got {raw!r}") from None
    if as_of > today:
        raise AirflowFailException(f"as_of_date {as_of} is in the future (today is {today}); "
                                   "runs can only use data that exists")
    return as_of


def int_param(params: dict[str, Any], name: str, setting: str) -> int:
    """Param `name` when given, else the setting (Variable, environment, seed default)."""
    value = params.get(name)
    return int(value) if value is not None else config.get_int(setting)


def entity_ids(raw: list[int] | None) -> list[int] | None:
    """A run's `product_ids` / `user_ids` param as sorted unique ids; None: every entity. The
    Params schema has already refused an empty list and ids below 1."""
    return None if raw is None else sorted({int(i) for i in raw})


class RunSettings:
    """A frozen dataclass of run settings that travels between tasks through XCom as JSON.

    A run for some entities (a backfill, a re-drive) carries their ids in the field named by IDS
    (at most 10,000: about 70 KB), inside the settings, so that no task can act without them."""

    IDS: str | None = None

    @property
    def ids(self) -> list[int] | None:
        """The requested entity ids; None: a run of every entity."""
        return getattr(self, self.IDS) if self.IDS else None

    def requested(self, shard: int, of: int) -> list[int]:
        """The run's requested ids in shard `shard` of `of` (an entity's shard is id % of)."""
        return [i for i in self.ids or () if i % of == shard]

    def shards_to_run(self, shards: list[dict[str, int]]) -> list[dict[str, int]]:
        """All shards, or for a run of some ids only those holding one."""
        return shards if self.ids is None else [s for s in shards if self.requested(s["shard"], s["of"])]

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        from dataclasses import fields

        dates = {f.name for f in fields(cls) if f.type in ("dt.date", dt.date)}
        return cls(**{k: dt.date.fromisoformat(v) if k in dates else v for k, v in data.items()})
