"""Parasut API v4 over httpx: OAuth2 with rotated refresh tokens, a 10-per-10-s token bucket,
retries with backoff and jitter on 429 (honouring Retry-After), 5xx and timeouts.

Tokens: the first call uses the password grant; afterwards every refresh returns a new refresh
token, which replaces the stored one (table parasut_tokens) before it is used, so a crash never
strands the product with a spent token. Tokens never appear in logs, errors or metadata.
Amounts go as JSON numbers written from Decimal digits, never through float.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import urlsplit

import httpx

from ...stores.postgres import connect
from ...stores.urls import hide_request_paths_in_http_log
from ..rate_limit import TokenBucket

JSONAPI = "application/vnd.api+json"
hide_request_paths_in_http_log()  # a PDF's signed link is a credential for an hour
OOB = "urn:ietf:wg:oauth:2.0:oob"


class ParasutRefused(Exception):
    """A definitive 4xx (422 validation, 404...): the request did nothing."""

    def __init__(self, method: str, path: str, status: int, detail: str):
        self.status = status
        super().__init__(f"Parasut refused {method} {path}: HTTP {status}: {detail}")


class ParasutUnavailable(Exception):
    """Retries ran out, or a write failed after it may have been sent (a timeout, a reset, a 5xx):
    the request may or may not have been applied. Writes are never retried blindly here: Parasut
    has no idempotency keys, so the caller looks up what exists first."""


@dataclass(frozen=True)
class ParasutCredentials:
    base_url: str
    company_id: str
    client_id: str
    client_secret: str
    username: str
    password: str


def dumps(body) -> bytes:
    """JSON with Decimals as exact numbers."""
    def mark(value):
        if isinstance(value, Decimal):
            return f"\x00{value:f}\x00"
        raise TypeError(f"not JSON serializable: {type(value).__name__}")
    text = json.dumps(body, default=mark, ensure_ascii=False)
    return re.sub(r'"\\u0000(-?[0-9.]+)\\u0000"', r"\1", text).encode()


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        return "; ".join(str(e.get("detail") or e.get("title")) for e in errors)[:500]
    return str(body.get("error") if isinstance(body, dict) else body)[:300]


def _named(url: str) -> str:
    """A request as messages name it: its API path; a file link only by its host (a signed link's
    path and query are its credential)."""
    if "/v4" in url:
        return url.split("/v4", 1)[-1]
    parts = urlsplit(url)
    return parts.path if parts.path.endswith("/oauth/token") else f"file link on {parts.netloc}"


class ParasutClient:
    def __init__(self, credentials: ParasutCredentials, db_url: str, *, requests_per_window: int = 10,
                 window_seconds: float = 10.0, attempts: int = 6, base_delay: float = 1.0, max_delay: float = 30.0,
                 timeout: float = 30.0, sleep=time.sleep):
        self.c = credentials
        self.db_url = db_url
        # 5% under the limit: clocks and windows never line up exactly between us and Parasut
        self.limiter = TokenBucket(requests_per_window, per=window_seconds * 1.05)
        self.attempts, self.base_delay, self.max_delay = attempts, base_delay, max_delay
        self._sleep = sleep
        self.http = httpx.Client(timeout=timeout)
        self._token_lock = threading.Lock()
        self._access: tuple[str, datetime] | None = None
        self.calls = self.retried = self.throttled = 0
        self._count_lock = threading.Lock()

    @property
    def api(self) -> str:
        return f"{self.c.base_url.rstrip('/')}/v4/{self.c.company_id}"

    # --- OAuth -------------------------------------------------------------------------------------
    def _grant(self, form: dict) -> dict:
        response = self._send("POST", f"{self.c.base_url.rstrip('/')}/oauth/token", data=form, auth=False)
        if response.status_code != 200:
            raise ParasutRefused("POST", "/oauth/token", response.status_code, _detail(response))
        return response.json()

    def _stored_refresh_token(self) -> str | None:
        with connect(self.db_url) as conn:
            row = conn.execute("SELECT refresh_token FROM parasut_tokens WHERE company_id = %s",
                               (self.c.company_id,)).fetchone()
        return row[0] if row else None

    def _store_refresh_token(self, token: str) -> None:
        with connect(self.db_url) as conn:
            conn.execute("""INSERT INTO parasut_tokens (company_id, refresh_token) VALUES (%s, %s)
                            ON CONFLICT (company_id) DO UPDATE SET refresh_token = EXCLUDED.refresh_token,
                                rotated_at = now()""", (self.c.company_id, token))
            conn.commit()

    def _token(self, force_refresh: bool = False) -> str:
        with self._token_lock:
            now = datetime.now(timezone.utc)
            if self._access and not force_refresh and self._access[1] > now + timedelta(seconds=60):
                return self._access[0]
            refresh = self._stored_refresh_token()
            granted = None
            if refresh:
                try:
                    granted = self._grant({"grant_type": "refresh_token", "client_id": self.c.client_id,
                                           "client_secret": self.c.client_secret, "refresh_token": refresh})
                except ParasutRefused:
                    granted = None  # revoked or spent elsewhere: sign in again
            if granted is None:
                granted = self._grant({"grant_type": "password", "client_id": self.c.client_id,
                                       "client_secret": self.c.client_secret, "username": self.c.username,
                                       "password": self.c.password, "redirect_uri": OOB})
            self._store_refresh_token(granted["refresh_token"])
            self._access = (granted["access_token"], now + timedelta(seconds=int(granted.get("expires_in", 7200))))
            return self._access[0]

    # --- requests ----------------------------------------------------------------------------------
    def _send(self, method: str, url: str, auth: bool = True, **kwargs) -> httpx.Response:
        """One request through the bucket. Retried: 429 (refused unprocessed, after Retry-After) and
        failures to connect (never sent) always; 5xx, timeouts and resets only for reads and the
        token endpoint, whose repetition is harmless."""
        repeatable = method == "GET" or not auth
        refreshed = False
        headers = dict(kwargs.pop("headers", None) or {})
        for attempt in range(1, self.attempts + 1):
            if auth:
                headers["Authorization"] = f"Bearer {self._token()}"
            self.limiter.acquire()
            with self._count_lock:
                self.calls += 1
            response, sent = None, True
            try:
                response = self.http.request(method, url, headers=headers, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                reason, sent = type(exc).__name__, False
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            if response is not None:
                if response.status_code == 401 and auth and not refreshed:
                    self._token(force_refresh=True)  # expired or revoked access token: once
                    refreshed = True
                    continue
                if response.status_code < 500 and response.status_code != 429:
                    return response
                reason = f"HTTP {response.status_code}"
                if response.status_code == 429:
                    sent = False
                    with self._count_lock:
                        self.throttled += 1
            if sent and not repeatable:
                raise ParasutUnavailable(f"Parasut {method} {_named(url)}: {reason} after it may have been applied")
            if attempt == self.attempts:
                raise ParasutUnavailable(f"Parasut {method} {_named(url)} still failing after {attempt} attempts: "
                                         f"{reason}")
            with self._count_lock:
                self.retried += 1
            delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            if response is not None and response.headers.get("Retry-After", "").isdigit():
                delay = max(delay, float(response.headers["Retry-After"]) + random.uniform(0, 0.5))
            self._sleep(delay)
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, params: dict | None = None, body: dict | None = None) -> dict | None:
        """JSON:API call under /v4/{company}; None for 204 (not ready yet)."""
        kwargs: dict = {"params": params}
        if body is not None:
            kwargs["content"] = dumps(body)
            kwargs["headers"] = {"Content-Type": JSONAPI, "Accept": JSONAPI}
        response = self._send(method, f"{self.api}{path}", **kwargs)
        if response.status_code == 204:
            return None
        if response.status_code >= 400:
            raise ParasutRefused(method, path, response.status_code, _detail(response))
        return response.json(parse_float=Decimal)

    def download(self, url: str) -> bytes:
        """A file Parasut links to (the e-document PDF, on its storage): no token, same retries."""
        response = self._send("GET", url, auth=False)
        if response.status_code != 200:
            raise ParasutRefused("GET", "pdf file", response.status_code, _detail(response))
        return response.content

    def close(self) -> None:
        self.http.close()
