"""A local server answering OpenMeter's meter query API (GET /api/v1/meters/{slug}/query) in its
response shape, computed from a list of gateway events. OpenMeter itself cannot run here."""

from __future__ import annotations

import http.server
import json
import urllib.parse
from collections import defaultdict
from datetime import datetime, timedelta, timezone

from billing_pipeline.domain.meters import load_compute_units

from loopback import LoopbackServer

WEIGHTS = load_compute_units()


def _value(slug: str, event: dict) -> int | None:
    if slug == "requests":
        return 1
    if slug == "successful_requests":
        return 1 if event["http_status"] < 400 else None
    if slug == "egress_bytes":
        return event["bytes_out"]
    if slug == "compute_units":
        return WEIGHTS.methods.get(event["method"], WEIGHTS.default)
    raise KeyError(slug)


class OpenMeterServer(LoopbackServer):
    def __init__(self, events: list[dict]):
        # OpenMeter deduplicates events on ingestion: the first copy of each id is kept.
        first: dict[str, dict] = {}
        for e in sorted(events, key=lambda e: e["timestamp"]):
            first.setdefault(e["request_id"], e)
        self.events = list(first.values())
        self.requests: list[dict] = []
        self.fail_next = 0
        self.override: dict | None = None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                url = urllib.parse.urlsplit(self.path)
                params = urllib.parse.parse_qs(url.query)
                server.requests.append({"path": url.path, "params": params,
                                        "authorization": self.headers.get("Authorization")})
                if server.fail_next:
                    server.fail_next -= 1
                    self.send_response(503)
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    return
                slug = url.path.split("/")[-2]
                body = server.override or server.answer(slug, params)
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        super().__init__(Handler)

    def answer(self, slug: str, params: dict) -> dict:
        start = datetime.fromisoformat(params["from"][0].replace("Z", "+00:00"))
        end = datetime.fromisoformat(params["to"][0].replace("Z", "+00:00"))
        sums: dict[tuple, int] = defaultdict(int)
        for e in self.events:
            ts = e["timestamp"]
            value = _value(slug, e)
            if start <= ts < end and value is not None:
                sums[(ts.date(), e["org_id"] or None, e["project_id"], e["chain"])] += value
        data = []
        for (day, subject, project, chain), value in sorted(sums.items(), key=lambda kv: str(kv[0])):
            window = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
            data.append({"value": value, "windowStart": window.isoformat().replace("+00:00", "Z"),
                         "windowEnd": (window + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
                         "subject": subject, "groupBy": {"project_id": project, "chain": chain}})
        return {"from": params["from"][0], "to": params["to"][0], "windowSize": "DAY", "data": data}
