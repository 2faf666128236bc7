"""OpenMeter's meter query API (GET /api/v1/meters/{slug}/query) as an optional usage source.

Requests are retried with exponential backoff on 429, 5xx and transport errors (honouring
Retry-After); queries are reads, so retrying them is always safe.
"""

from __future__ import annotations

import time
from datetime import datetime
from decimal import Decimal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import settings
from ..errors import BillingError, StoreUnavailableError
from .urls import redact

RETRIED_STATUS = {429, 500, 502, 503, 504}


class MeterQueryRow(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    value: Decimal
    window_start: datetime = Field(alias="windowStart")
    window_end: datetime = Field(alias="windowEnd")
    subject: str | None = None
    group_by: dict[str, str | None] = Field(default_factory=dict, alias="groupBy")


class MeterQueryResult(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    window_size: str | None = Field(default=None, alias="windowSize")
    data: list[MeterQueryRow]


class OpenMeterClient:
    def __init__(self, url: str, token: str | None = None, *, max_attempts: int = 5, backoff_seconds: float = 0.5,
                 transport: httpx.BaseTransport | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30, transport=transport)

    def close(self) -> None:
        self._http.close()

    def query(self, meter: str, start: datetime, end: datetime, group_by: list[str]) -> list[MeterQueryRow]:
        params = [("from", start.isoformat().replace("+00:00", "Z")), ("to", end.isoformat().replace("+00:00", "Z")),
                  ("windowSize", "DAY"), ("windowTimeZone", "UTC")] + [("groupBy", g) for g in group_by]
        response = self._get(f"/api/v1/meters/{meter}/query", params)
        try:
            result = MeterQueryResult.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise BillingError(f"OpenMeter answered meter {meter!r} with an unexpected body: {str(exc)[:300]}") from None
        if result.window_size not in (None, "DAY"):
            raise BillingError(f"OpenMeter answered meter {meter!r} in {result.window_size} windows, not DAY")
        return result.data

    def _get(self, path: str, params) -> httpx.Response:
        where = f"{settings.OPENMETER_URL_ENV}={redact(self.url)!r}"
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self._http.get(path, params=params)
            except httpx.TransportError as exc:
                if attempt == self.max_attempts:
                    raise StoreUnavailableError(f"cannot reach OpenMeter at {where}: {type(exc).__name__}: {exc}") from None
                self._sleep(attempt, None)
                continue
            if response.status_code in RETRIED_STATUS and attempt < self.max_attempts:
                self._sleep(attempt, response.headers.get("Retry-After"))
                continue
            if response.status_code != 200:
                raise StoreUnavailableError(f"OpenMeter at {where} answered {path} with HTTP {response.status_code}: "
                                            f"{response.text[:200]}")
            return response
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff_seconds * 2 ** (attempt - 1)
        if retry_after and retry_after.isdigit():
            delay = max(delay, float(retry_after))
        time.sleep(min(delay, 30.0))
