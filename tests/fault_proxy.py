"""A reverse proxy on loopback that makes a share of the calls to one upstream fail, as networks do.

Placed in front of a fake server (Stripe, Parasut, TCMB/ECB, moto S3), it forwards every request
as sent (method, path, query, headers including Host and the signed S3 headers, body; only
hop-by-hop headers go, and a chunked body travels whole with its length) and, with a seeded
``random.Random`` and ``rate`` per request, injects one of these faults instead:

- ``429``: refused unprocessed, ``Retry-After: 1``, in the upstream's error format;
- ``5xx``: 500, 502 or 503, unprocessed;
- ``timeout``: the request is held, never forwarded, until the client gives up (closes) or
  ``hold_seconds`` pass, then the connection is closed without an answer;
- ``reset``: the connection is reset (SO_LINGER 0) without an answer, nothing forwarded;
- ``lost``: the dangerous one: the upstream performs the call, but its answer is lost; the
  client sees a reset or a 502.

The first fault a write (POST, PUT, PATCH, DELETE) meets is always ``lost``, the kind that makes
duplicates; after that, kinds are drawn from seeded shuffle bags (each of the five once per five
faults, in random order), one for writes and one for reads, so a few dozen calls meet every kind.
``kinds`` narrows the choice. ``counts`` holds the faults injected per kind, ``write_counts``
those on writes, ``details`` the variant (``500``, ``lost/502``...).
"""

from __future__ import annotations

import http.client
import json
import random
import select
import socket
import struct
import threading
import time
import urllib.parse
from collections import Counter

from loopback import KeepAliveHandler, LoopbackServer

KINDS = ("429", "5xx", "timeout", "reset", "lost")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "expect"}


# --- error answers in each upstream's own format --------------------------------------------------

def stripe_error(status: int) -> tuple[str, bytes]:
    kind = "invalid_request_error" if status == 429 else "api_error"
    message = "Too many requests" if status == 429 else f"Injected HTTP {status}"
    return "application/json", json.dumps({"error": {"type": kind, "message": message,
                                                     **({"code": "rate_limit"} if status == 429 else {})}}).encode()


def parasut_error(status: int) -> tuple[str, bytes]:
    return "application/vnd.api+json", json.dumps({"errors": [{"title": f"Injected HTTP {status}",
                                                               "detail": f"Injected HTTP {status}"}]}).encode()


def s3_error(status: int) -> tuple[str, bytes]:
    code = {429: "SlowDown", 500: "InternalError", 502: "BadGateway", 503: "ServiceUnavailable"}[status]
    return "application/xml", (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                               f"<Message>Injected HTTP {status}</Message></Error>").encode()


def plain_error(status: int) -> tuple[str, bytes]:
    return "text/plain", f"Injected HTTP {status}".encode()


class FaultProxy(LoopbackServer):
    def __init__(self, name: str, upstream: str, rate: float = 0.30, seed: int = 0, hold_seconds: float = 5.0,
                 error_body=plain_error, kinds: tuple[str, ...] = KINDS):
        self.name = name
        target = urllib.parse.urlsplit(upstream)
        self.upstream_host, self.upstream_port = target.hostname, target.port or 80
        self.rate, self.hold_seconds, self.error_body, self.kinds = rate, hold_seconds, error_body, kinds
        # writes and reads draw from streams of their own: the n-th write meets the same fate
        # whatever reads other threads interleave with it
        self._random = {True: random.Random(seed * 2 + 1), False: random.Random(seed * 2)}
        self.enabled = True
        self.lock = threading.Lock()
        self._bags: dict[bool, list[str]] = {True: [], False: []}  # is a write -> kinds left in its bag
        self.counts: Counter[str] = Counter()  # faults injected, per kind
        self.write_counts: Counter[str] = Counter()  # of which on writes (POST, PUT, PATCH, DELETE)
        self.details: Counter[str] = Counter()  # per variant: 500/502/503, lost/reset, lost/502
        self.calls = 0  # requests received
        self.forwarded = 0  # requests the upstream received (answered or lost)
        self.log: list[tuple[str, str, str]] = []  # (method, path, fault kind or "ok")
        proxy = self

        class Handler(KeepAliveHandler):
            def _serve(self, method: str, body: bytes) -> None:
                fault, variant = proxy._draw(method, self.path)
                if fault == "429":
                    return self._answer_error(method, 429, {"Retry-After": "1"})
                if fault == "5xx":
                    return self._answer_error(method, variant)
                if fault == "timeout":
                    return self._hold_then_close()
                if fault == "reset":
                    return self._reset()
                status, headers, payload = proxy._forward(method, self.path, self.headers, body)
                if fault == "lost":  # the upstream did it; the client never learns
                    return self._answer_error(method, 502) if variant == "lost/502" else self._reset()
                self._answer(method, status, headers, payload)

            def do_HEAD(self):  # noqa: N802 - boto3's HeadBucket
                self._dispatch("HEAD")

            def _read_body(self) -> bytes | None:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    data = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return bytes(data)
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return super()._read_body()

            def _answer(self, method: str, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
                self.send_response_only(status)
                for key, value in headers:
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                if method == "HEAD":  # the upstream's length of what a GET would return
                    length = next((v for k, v in headers if k.lower() == "content-length"), None)
                    if length is not None:
                        self.send_header("Content-Length", length)
                elif status not in (204, 304):
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if method != "HEAD" and status not in (204, 304):
                    try:
                        self.wfile.write(payload)
                    except (BrokenPipeError, ConnectionResetError):
                        pass

            def _answer_error(self, method: str, status, extra: dict | None = None) -> None:
                content_type, payload = proxy.error_body(int(status))
                headers = [("Content-Type", content_type), *(extra or {}).items()]
                self._answer(method, int(status), headers, b"" if method == "HEAD" else payload)

            def _hold_then_close(self) -> None:
                """Hold until the client gives up (its end closes) or hold_seconds pass."""
                sock, deadline = self.connection, time.monotonic() + proxy.hold_seconds
                while (left := deadline - time.monotonic()) > 0:
                    readable, _, _ = select.select([sock], [], [], min(left, 0.05))
                    if readable:
                        try:
                            if sock.recv(1, socket.MSG_PEEK) == b"":
                                break  # the client closed: it has timed out
                        except OSError:
                            break
                self.close_connection = True

            def _reset(self) -> None:
                # linger 0: closing sends RST, not FIN (socketserver's later close of it is harmless)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

        super().__init__(Handler)

    # --- controls and figures ---
    def _draw(self, method: str, path: str) -> tuple[str | None, str | None]:
        """(fault kind or None, its variant: the 5xx status, or how a lost answer ends)."""
        with self.lock:
            self.calls += 1
            write = method not in ("GET", "HEAD")
            rng, bag = self._random[write], self._bags[write]
            fault = variant = None
            if self.enabled and rng.random() < self.rate:
                if write and not self.write_counts and "lost" in self.kinds:
                    fault = "lost"
                else:
                    if not bag:
                        bag.extend(self.kinds)
                        rng.shuffle(bag)
                    fault = bag.pop()
                self.counts[fault] += 1
                if write:
                    self.write_counts[fault] += 1
                if fault == "5xx":
                    variant = rng.choice(("500", "502", "503"))
                elif fault == "lost":
                    variant = rng.choice(("lost/reset", "lost/502"))
                if variant:
                    self.details[variant] += 1
            self.log.append((method, path, fault or "ok"))
            return fault, variant

    def _forward(self, method: str, path: str, headers, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """The request as the client sent it (Host included, so signatures hold); the full answer."""
        out = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"}
        if body or method in ("POST", "PUT", "PATCH"):
            out["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            conn.request(method, path, body=body or None, headers=out)
            response = conn.getresponse()
            payload = response.read()
            with self.lock:
                self.forwarded += 1
            return response.status, response.getheaders(), payload
        finally:
            conn.close()

    @property
    def injected(self) -> int:
        return sum(self.counts.values())

    def figures(self) -> str:
        counts = ", ".join(f"{k} {self.counts[k]}" for k in KINDS)
        details = ", ".join(f"{k} {v}" for k, v in sorted(self.details.items()))
        writes = ", ".join(f"{k} {self.write_counts[k]}" for k in KINDS)
        return (f"{self.name}: {self.calls} calls, {self.injected} faults ({counts}; {details}), "
                f"on writes: {writes}; {self.forwarded} forwarded")
