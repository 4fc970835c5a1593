"""A small OpenAI-compatible HTTP client (standard library only) with retries, a concurrency limit and a
resumable response cache.

* Timeouts: every socket operation of a request is bounded by ``timeout_s``.
* Retries: HTTP 408/429/500/502/503/504, dropped connections and timeouts are retried up to
  ``max_retries`` times, waiting ``uniform(c/2, c)`` seconds with ``c = min(backoff_max_s, backoff_s * 2**n)``
  before retry ``n + 1`` (exponential backoff with jitter), or the server's ``Retry-After`` when longer.
  Other 4xx answers fail at once with the server's message.
* Concurrency: at most ``concurrency`` requests are in flight per client, however many threads call it;
  :meth:`OpenAIClient.map` runs a function over items on that many threads.
* Cache: with ``cache_dir``, POST responses are stored per request key
  (:mod:`~training.teachers.response_cache`), so an interrupted collection resumes without
  re-querying finished prompts.
* API key: read once from the environment variable named by ``api_key_env`` and sent as a bearer token. It
  is never logged, never part of a cache key or file, and removed from any error text (a server that
  echoes request headers in an error body included).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from training.teachers.response_cache import ResponseCache, request_key

logger = logging.getLogger(__name__)

DEFAULT_API_KEY_ENV = "DISTILLERY_TEACHER_API_KEY"
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_ERROR_TEXT_LIMIT = 300

T = TypeVar("T")
R = TypeVar("R")


class TeacherHTTPError(RuntimeError):
    """A request failed for good (a non-retryable answer, or retries exhausted). ``status`` is the last HTTP
    status, None for connection failures."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: ``uniform(c/2, c)``, ``c = min(backoff_max_s, backoff_s * 2**n)``."""

    max_retries: int = 6
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_s <= 0 or self.backoff_max_s <= 0:
            raise ValueError("max_retries must be >= 0 and backoff_s, backoff_max_s > 0")

    def delay(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry + 1`` (``retry`` counts from 0)."""
        cap = min(self.backoff_max_s, self.backoff_s * 2.0**retry)
        wait = rng.uniform(cap / 2.0, cap)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.backoff_max_s))
        return wait


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class OpenAIClient:
    """POST/GET JSON to an OpenAI-compatible server such as ``http://127.0.0.1:8000/v1``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key_env: str | None = DEFAULT_API_KEY_ENV,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        concurrency: int = 4,
        cache_dir: str | os.PathLike[str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"teacher url must look like http://host:port/v1, got {base_url!r}")
        if parts.username or parts.password:
            raise ValueError(
                "teacher url must not carry credentials; put the API key in the environment "
                f"variable named by api_key_env ({api_key_env})"
            )
        if timeout_s <= 0 or concurrency < 1:
            raise ValueError("timeout_s must be > 0 and concurrency >= 1")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self.base_url = f"{parts.scheme}://{parts.netloc}{self._prefix}"
        self.api_key_env = api_key_env
        self._api_key = (os.environ.get(api_key_env) or None) if api_key_env else None
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.concurrency = concurrency
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self._slots = threading.BoundedSemaphore(concurrency)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()

    def __repr__(self) -> str:
        key_state = "set" if self._api_key else "unset"
        return f"OpenAIClient({self.base_url!r}, api key {key_state} via ${self.api_key_env})"

    # ---- helpers ------------------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        """``text`` with the API key (if any) replaced by ``[REDACTED]``."""
        if self._api_key:
            text = text.replace(self._api_key, "[REDACTED]")
        return text

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "distillery-teacher-client/1",
        }
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self.timeout_s)

    def _once(self, method: str, path: str, payload: bytes | None) -> tuple[int, str | None, bytes]:
        """One attempt -> (status, Retry-After header, body). Raises OSError / HTTPException on a dropped
        connection or a timeout."""
        conn = self._connection()
        try:
            conn.request(method, path, body=payload, headers=self._headers())
            response = conn.getresponse()
            return response.status, response.getheader("Retry-After"), response.read()
        finally:
            conn.close()

    def _error_text(self, data: bytes) -> str:
        try:
            body = json.loads(data)
            error = body.get("error") if isinstance(body, dict) else None
            text = error.get("message") if isinstance(error, dict) else error
            text = str(text) if text is not None else data.decode("utf-8", "replace")
        except (json.JSONDecodeError, UnicodeDecodeError):
            text = data.decode("utf-8", "replace")
        return self.redact(text.strip()[:_ERROR_TEXT_LIMIT])

    def _request(self, method: str, endpoint: str, body: dict[str, Any] | None) -> dict[str, Any]:
        path = f"{self._prefix}/{endpoint.lstrip('/')}"
        payload = json.dumps(body).encode("utf-8") if body is not None else None
        attempts = self.retry.max_retries + 1
        last = "no attempt made"
        status: int | None = None
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                with self._slots:
                    self._count("requests")
                    status, retry_header, data = self._once(method, path, payload)
            except (OSError, http.client.HTTPException) as exc:
                status = None
                last = f"{type(exc).__name__}: {self.redact(str(exc)) or 'connection dropped'}"
            else:
                if 200 <= status < 300:
                    try:
                        parsed = json.loads(data)
                    except json.JSONDecodeError as exc:
                        raise TeacherHTTPError(
                            f"{method} {path}: HTTP {status} with a body that is not JSON ({exc.msg})", status
                        ) from None
                    if not isinstance(parsed, dict):
                        raise TeacherHTTPError(f"{method} {path}: expected a JSON object", status)
                    return parsed
                message = self._error_text(data)
                if status not in RETRYABLE_STATUS:
                    raise TeacherHTTPError(
                        f"{method} {self.base_url}{path[len(self._prefix) :]}: HTTP {status}: {message}",
                        status,
                    )
                last = f"HTTP {status}: {message}"
                retry_after = _retry_after(retry_header)
            if attempt + 1 == attempts:
                break
            wait = self.retry.delay(attempt, self._rng, retry_after)
            self._count("retries")
            logger.warning(
                "%s %s failed (%s); retry %d/%d in %.2f s",
                method,
                path,
                last,
                attempt + 1,
                self.retry.max_retries,
                wait,
            )
            self._sleep(wait)
        raise TeacherHTTPError(
            f"{method} {self.base_url}{path[len(self._prefix) :]} failed after {attempts} "
            f"attempts; last error: {last}",
            status,
        )

    # ---- public API ---------------------------------------------------------------------------------
    def post(self, endpoint: str, body: dict[str, Any], use_cache: bool = True) -> dict[str, Any]:
        """POST JSON; with a cache, a stored response for the same (endpoint, body) is returned instead."""
        key = request_key(endpoint, body) if self.cache is not None and use_cache else None
        if key is not None and self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                self._count("cache_hits")
                return cached
        response = self._request("POST", endpoint, body)
        if key is not None and self.cache is not None:
            self.cache.put(key, endpoint, response)
        return response

    def get(self, endpoint: str) -> dict[str, Any]:
        """GET JSON (never cached)."""
        return self._request("GET", endpoint, None)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(x) for x in items]`` on up to ``concurrency`` threads, in order; the first error cancels
        what has not started and is raised."""
        if self.concurrency == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            futures = [pool.submit(fn, x) for x in items]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
