"""Failing checks pushed to a webhook, HMAC-signed like Stripe's webhooks.

The body is JSON; the header ``X-Billing-Signature: t=<unix time>,v1=<hex>`` carries
HMAC-SHA256(secret, "<t>.<body>"). A receiver recomputes it with the shared secret and refuses a
timestamp older than a few minutes (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx

from ..stores.urls import hide_request_paths_in_http_log

SIGNATURE_HEADER = "X-Billing-Signature"
hide_request_paths_in_http_log()  # a webhook URL (Slack's, say) is itself a credential


def signature(body: bytes, secret: str, at: int) -> str:
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def verify_signature(body: bytes, header: str, secret: str, tolerance: int = 300, now: float | None = None) -> bool:
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        at = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - at) > tolerance:
        return False
    return hmac.compare_digest(signature(body, secret, at), header)


def post_alert(url: str, secret: str | None, alert: dict, attempts: int = 3, timeout: float = 10.0,
               sleep=time.sleep) -> None:
    """Send one alert; raises httpx.HTTPError (or RuntimeError on a non-2xx answer) after retries."""
    body = json.dumps(alert, sort_keys=True, default=str).encode()
    for attempt in range(1, attempts + 1):
        headers = {"Content-Type": "application/json"}
        if secret:
            headers[SIGNATURE_HEADER] = signature(body, secret, int(time.time()))
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=timeout)
            if response.status_code < 300:
                return
            error: Exception = RuntimeError(f"alert webhook answered HTTP {response.status_code}")
        except httpx.HTTPError as exc:
            error = exc
        if attempt == attempts:
            raise error
        sleep(2 ** attempt)
