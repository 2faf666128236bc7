"""Calls to Stripe through the official SDK, paced to the rate limit and retried when safe.

Retried, with exponential backoff and jitter, always with the same idempotency key: 429, 409,
5xx, connection failures and timeouts, and anything Stripe marks ``Stripe-Should-Retry: true``;
never what Stripe marks ``Stripe-Should-Retry: false`` or any other 4xx.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass

import stripe

from ..rate_limit import TokenBucket

TEST_MODE_OPS_PER_SECOND = 25
LIVE_MODE_OPS_PER_SECOND = 100


class StripeRefused(Exception):
    """Stripe answered with a definitive error: nothing was created by this request."""

    def __init__(self, method: str, path: str, status: int | None, code: str | None, message: str):
        self.status, self.code = status, code
        super().__init__(f"Stripe refused {method.upper()} {path}: HTTP {status} {code or ''} {message}".replace("  ", " "))


class StripeUnavailable(Exception):
    """Retries ran out: the request may or may not have reached Stripe."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 20.0


def default_ops_per_second(api_key: str) -> int:
    return LIVE_MODE_OPS_PER_SECOND if api_key.startswith(("sk_live_", "rk_live_")) else TEST_MODE_OPS_PER_SECOND


class StripeGateway:
    def __init__(self, api_key: str, api_base: str | None = None, max_ops_per_second: float | None = None,
                 timeout_seconds: float = 30.0, http_client: stripe.HTTPClient | None = None,
                 retry: RetryPolicy = RetryPolicy(), sleep=time.sleep):
        self.client = stripe.StripeClient(
            api_key, base_addresses={"api": api_base} if api_base else {}, max_network_retries=0,
            http_client=http_client or stripe.RequestsClient(timeout=timeout_seconds))
        self.ops_per_second = max_ops_per_second or default_ops_per_second(api_key)
        self.limiter = TokenBucket(self.ops_per_second)
        self.retry = retry
        self._sleep = sleep
        self._lock = threading.Lock()
        self.calls = 0
        self.retried = 0
        self.throttled = 0  # 429 answers seen (each retried)

    def request(self, method: str, path: str, params: dict | None = None, idempotency_key: str | None = None) -> dict:
        kwargs = dict(params or {})
        if idempotency_key:
            kwargs["idempotency_key"] = idempotency_key
        for attempt in range(1, self.retry.attempts + 1):
            self.limiter.acquire()
            with self._lock:
                self.calls += 1
            try:
                response = self.client.raw_request(method, path, **kwargs)
                return json.loads(response.body)
            except stripe.StripeError as exc:
                status = exc.http_status
                if status == 429:
                    with self._lock:
                        self.throttled += 1
                if not _retryable(exc):
                    error = exc.error
                    raise StripeRefused(method, path, status, getattr(error, "code", None) or exc.code,
                                        getattr(error, "message", None) or exc.user_message or str(exc)) from None
                if attempt == self.retry.attempts:
                    # one line: the SDK's network message spans several, and it lands in a check's table
                    detail = " ".join(str(exc.user_message or exc).split())
                    raise StripeUnavailable(f"Stripe {method.upper()} {path} still failing after {attempt} attempts: "
                                            f"{type(exc).__name__} HTTP {status} {detail}") from None
            with self._lock:
                self.retried += 1
            delay = min(self.retry.max_delay, self.retry.base_delay * 2 ** (attempt - 1))
            self._sleep(delay * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    def list_all(self, path: str, params: dict | None = None, limit: int = 100) -> list[dict]:
        """Every object of a list endpoint, following starting_after."""
        out: list[dict] = []
        query = {**(params or {}), "limit": str(limit)}
        while True:
            page = self.request("get", path, query)
            out.extend(page["data"])
            if not page.get("has_more") or not page["data"]:
                return out
            query["starting_after"] = page["data"][-1]["id"]


def _retryable(exc: stripe.StripeError) -> bool:
    if isinstance(exc, stripe.APIConnectionError):
        return True  # timeout, reset, refused: it may not have arrived; the idempotency key makes a retry safe
    headers = {str(k).lower(): v for k, v in (exc.headers or {}).items()}
    advice = headers.get("stripe-should-retry")
    if advice == "false":
        return False
    if advice == "true":
        return True
    status = exc.http_status or 0
    return status in (409, 429) or status >= 500
