"""Chat completions from an OpenAI-compatible endpoint, with a pool of API keys.

The endpoint and its keys come from one Airflow connection (default ``insights_llm``):
conn_type http, host = base URL (``https://api.openai.com/v1``; a host without scheme gets the
connection's schema, https by default, and its port), keys in extra ``api_keys`` (a list, or a
comma-separated string) or else in the password (comma-separated), the model in extra ``model``,
and optionally extra ``timeout`` (seconds) and ``temperature``.

Key rotation: HTTP 429 puts a strike on the key and moves on to the next one; once every live
key has been rate-limited since the last success the client waits (Retry-After, capped) before
the next round. A key with ``max_rate_limits`` strikes in a row, or one answered 401/402/403
(invalid or out of quota), is exhausted for the rest of the run. With every key exhausted,
``AllKeysExhausted`` ends the batch. Other failures (5xx, timeouts, bad replies) are retried a
few times and then raised as ``LLMRequestError`` for that one request. Keys are never logged:
logs name a key by its position in the pool.
"""
from __future__ import annotations

import logging
import time
from functools import cached_property
from typing import Any, Callable, Sequence

from airflow.sdk.bases.hook import BaseHook

log = logging.getLogger(__name__)

RATE_LIMITED = 429
KEY_REFUSED = frozenset({401, 402, 403})  # invalid key, payment required / quota, forbidden


class AllKeysExhausted(RuntimeError):
    """Every API key of the pool is rate-limited for good or refused; nothing more can be asked."""


class LLMRequestError(RuntimeError):
    """One completion failed for a reason that is not the keys' (server error, bad reply, bad request)."""


class KeyPool:
    """API keys used in turn; a key is dropped after `max_rate_limits` 429s in a row or one refusal."""

    def __init__(self, keys: Sequence[str], max_rate_limits: int = 3) -> None:
        keys = [k for k in keys if k]
        if not keys:
            raise ValueError("the key pool needs at least one API key")
        if max_rate_limits < 1:
            raise ValueError(f"max_rate_limits must be at least 1, got {max_rate_limits}")
        self.keys = list(keys)
        self.max_rate_limits = max_rate_limits
        self.strikes = [0] * len(keys)
        self.exhausted: set[int] = set()
        self.index = 0
        self.rate_limits = 0  # 429s seen, for the run's stats

    @property
    def live(self) -> int:
        return len(self.keys) - len(self.exhausted)

    def current(self) -> tuple[int, str]:
        if not self.live:
            raise AllKeysExhausted(f"all {len(self.keys)} API keys are exhausted (rate limited "
                                   f"{self.max_rate_limits} times in a row, or refused as invalid or out of quota)")
        while self.index in self.exhausted:
            self.index = (self.index + 1) % len(self.keys)
        return self.index, self.keys[self.index]

    def _rotate(self) -> None:
        self.index = (self.index + 1) % len(self.keys)

    def rate_limited(self, index: int) -> None:
        self.rate_limits += 1
        self.strikes[index] += 1
        if self.strikes[index] >= self.max_rate_limits:
            self.exhausted.add(index)
            log.warning("API key #%d exhausted after %d rate limits in a row; %d keys left",
                        index + 1, self.strikes[index], self.live)
        self._rotate()

    def refused(self, index: int, status: int) -> None:
        self.exhausted.add(index)
        log.warning("API key #%d refused with HTTP %d (invalid or out of quota); %d keys left", index + 1, status,
                    self.live)
        self._rotate()

    def succeeded(self, index: int) -> None:
        self.strikes[index] = 0


class ChatClient:
    """`complete(messages) -> reply text` against {base_url}/chat/completions."""

    def __init__(self, base_url: str, keys: Sequence[str], model: str, timeout: float = 30.0,
                 max_rate_limits: int = 3, retries: int = 2, backoff_cap: float = 10.0, temperature: float = 0.2,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.pool = KeyPool(keys, max_rate_limits)
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self.backoff_cap = backoff_cap
        self.temperature = temperature
        self.sleep = sleep
        self.requests = 0

    @cached_property
    def http(self):
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - httpx ships with Airflow
            raise ImportError("the LLM client needs httpx: pip install httpx") from exc
        return httpx.Client(timeout=self.timeout)

    def close(self) -> None:
        if "http" in self.__dict__:
            self.__dict__.pop("http").close()

    def __enter__(self) -> "ChatClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _wait(self, retry_after: str | None, attempt: int) -> None:
        try:
            seconds = float(retry_after) if retry_after is not None else 2.0 ** attempt
        except ValueError:
            seconds = 2.0 ** attempt
        self.sleep(max(0.0, min(seconds, self.backoff_cap)))

    def complete(self, messages: list[dict[str, str]]) -> str:
        import httpx

        payload = {"model": self.model, "messages": messages, "temperature": self.temperature,
                   "response_format": {"type": "json_object"}}
        failures = 0
        limited: set[int] = set()  # keys rate-limited since the last success
        rounds = 0
        while True:
            index, key = self.pool.current()
            self.requests += 1
            try:
                response = self.http.post(self.url, json=payload, headers={"Authorization": f"Bearer {key}"})
            except httpx.HTTPError as exc:
                failures += 1
                if failures > self.retries:
                    raise LLMRequestError(f"{type(exc).__name__} calling {self.url}: {exc}") from None
                self._wait(None, failures)
                continue
            status = response.status_code
            if status == RATE_LIMITED:
                self.pool.rate_limited(index)
                limited.add(index)
                live = set(range(len(self.pool.keys))) - self.pool.exhausted
                if live and live <= limited:  # every live key is rate-limited: wait before the next round
                    rounds += 1
                    limited.clear()
                    self._wait(response.headers.get("retry-after"), rounds)
                continue
            if status in KEY_REFUSED:
                self.pool.refused(index, status)
                continue
            if status >= 500:
                failures += 1
                if failures > self.retries:
                    raise LLMRequestError(f"HTTP {status} from {self.url} after {failures} attempts: "
                                          f"{response.text[:200]}")
                self._wait(response.headers.get("retry-after"), failures)
                continue
            if status != 200:
                raise LLMRequestError(f"HTTP {status} from {self.url}: {response.text[:200]}")
            self.pool.succeeded(index)
            try:
                return response.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise LLMRequestError(f"reply of {self.url} is not a chat completion: {response.text[:200]}") from None


def _keys(value: Any) -> list[str]:
    if isinstance(value, str):
        return [k.strip() for k in value.split(",") if k.strip()]
    if isinstance(value, (list, tuple)):
        return [str(k).strip() for k in value if str(k).strip()]
    return []


class LLMHook(BaseHook):
    """The chat endpoint of an Airflow connection; `get_conn()` builds the `ChatClient` once."""

    conn_name_attr = "llm_conn_id"
    default_conn_name = "insights_llm"
    conn_type = "http"
    hook_name = "OpenAI-compatible chat endpoint"

    def __init__(self, llm_conn_id: str = default_conn_name, **client_args: Any) -> None:
        super().__init__()
        self.llm_conn_id = llm_conn_id
        self.client_args = client_args

    @cached_property
    def client(self) -> ChatClient:
        conn = self.get_connection(self.llm_conn_id)
        extra = conn.extra_dejson
        host = (conn.host or "").strip()
        if not host:
            raise ValueError(f"connection {self.llm_conn_id!r} has no host; set it to the API base URL, "
                             "e.g. https://api.openai.com/v1")
        if "://" not in host:
            host = f"{conn.schema or 'https'}://{host}{f':{conn.port}' if conn.port else ''}"
        keys = _keys(extra.get("api_keys")) or _keys(conn.password)
        if not keys:
            raise ValueError(f"connection {self.llm_conn_id!r} has no API key; put a list in extra "
                             "'api_keys' or the key(s) in the password")
        args = {"timeout": float(extra.get("timeout", 30)), "temperature": float(extra.get("temperature", 0.2)),
                **self.client_args}
        log.info("LLM endpoint %s, model %s, %d API keys", host, extra.get("model", "gpt-4o-mini"), len(keys))
        return ChatClient(host, keys, str(extra.get("model", "gpt-4o-mini")), **args)

    def get_conn(self) -> ChatClient:
        return self.client

    def close(self) -> None:
        if "client" in self.__dict__:
            self.__dict__.pop("client").close()
