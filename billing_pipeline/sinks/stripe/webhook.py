"""The Stripe webhook endpoint: the same events as the poller, pushed, signature checked first.

Stripe signs each delivery: header ``Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>.<body>" with the endpoint secret>``. A delivery whose signature does not match, or whose
timestamp is more than 300 s away, is refused with 400 before anything is read from it; so is a
signed body that is not UTF-8, not JSON, or not shaped like an event (id, type, created and a
data.object), naming what is wrong, instead of failing inside the handler.
"""

from __future__ import annotations

import http.server
import json

import stripe

from ...stores.postgres import connect
from .events import EVENT_TYPES, apply_event

TOLERANCE_SECONDS = 300


class WebhookRejected(Exception):
    pass


def verified_event(payload: bytes, signature_header: str | None, secret: str) -> dict:
    """The event as a dict, or WebhookRejected naming why."""
    if not signature_header:
        raise WebhookRejected("missing Stripe-Signature header")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookRejected(f"payload is not UTF-8: byte 0x{payload[exc.start]:02x} at offset {exc.start}") from None
    try:
        stripe.WebhookSignature.verify_header(text, signature_header, secret, TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError as exc:
        raise WebhookRejected(f"signature check failed: {exc.user_message or exc}") from None
    try:
        event = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WebhookRejected(f"payload is not JSON: {exc}") from None
    problem = _not_an_event(event)
    if problem:
        raise WebhookRejected(f"payload is not a Stripe event: {problem}")
    return event


def _not_an_event(event: object) -> str | None:
    """What apply_event needs and the payload lacks, or None."""
    if not isinstance(event, dict):
        return f"a JSON {type(event).__name__}, not an object"
    for key, kind, noun in (("id", str, "a string"), ("type", str, "a string"), ("created", int, "an integer")):
        if not isinstance(event.get(key), kind) or isinstance(event.get(key), bool):
            return f"{key} is missing or not {noun}"
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        return "data.object is missing or not an object"
    return None


def handler_for(db_url: str, secret: str) -> type[http.server.BaseHTTPRequestHandler]:
    class StripeWebhookHandler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                event = verified_event(body, self.headers.get("Stripe-Signature"), secret)
            except WebhookRejected as exc:
                return self._answer(400, {"error": str(exc)})
            if event.get("type") not in EVENT_TYPES:
                return self._answer(200, {"received": True, "outcome": "ignored: type not handled"})
            with connect(db_url, autocommit=True) as conn:
                outcome = apply_event(conn, event, via="WEBHOOK")
            return self._answer(200, {"received": True, "outcome": outcome or "already applied"})

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # the CLI reports; no per-request noise
            pass

    return StripeWebhookHandler
