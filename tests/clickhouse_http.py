"""A local server speaking ClickHouse's HTTP interface, executed by the real ClickHouse engine (chdb).

No ClickHouse server can be installed here, so this lets the clickhouse-connect backend run its
real protocol (POSTed SQL, ``param_*`` bound parameters, Native/Arrow result formats, Arrow inserts)
against the real engine. Only the transport is ours; parsing, binding and execution are ClickHouse's.
"""

from __future__ import annotations

import http.server
import re
import tempfile
import threading
import urllib.parse
from pathlib import Path

from loopback import LoopbackServer

_INSERT_FORMAT = re.compile(r"^\s*INSERT\s+INTO\s+(.+?)\s+FORMAT\s+(\w+)\s*$", re.IGNORECASE | re.DOTALL)


class ClickHouseHttpServer(LoopbackServer):
    def __init__(self, chdb_session):
        self.session = chdb_session
        self.requests = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server naming
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                params = {k[len("param_"):]: v[0] for k, v in query.items() if k.startswith("param_")}
                try:
                    payload = server.execute(query.get("query", [None])[0], body, params)
                except Exception as exc:  # the engine's own error, returned the way ClickHouse does
                    message = str(exc).encode()
                    code = re.search(r"Code: (\d+)", str(exc))
                    self.send_response(500)
                    self.send_header("X-ClickHouse-Exception-Code", code.group(1) if code else "1")
                    self.send_header("Content-Length", str(len(message)))
                    self.end_headers()
                    self.wfile.write(message)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("X-ClickHouse-Summary", '{"read_rows":"0","written_rows":"0"}')
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST

            def log_message(self, *args):
                pass

        super().__init__(Handler)

    def execute(self, url_query: str | None, body: bytes, params: dict) -> bytes:
        with self.lock:  # one chdb session, one statement at a time
            if url_query:  # INSERT ... FORMAT X in the URL, the data in the body
                self.requests.append((url_query, params))
                match = _INSERT_FORMAT.match(url_query)
                if not match:
                    raise ValueError(f"unsupported query in URL: {url_query[:80]}")
                with tempfile.TemporaryDirectory() as tmp:
                    data = Path(tmp) / "data"
                    data.write_bytes(body)
                    target, fmt = match.groups()
                    columns = re.search(r"\((.*)\)", target)
                    select = columns.group(1) if columns else "*"
                    self.session.query(f"INSERT INTO {target} SELECT {select} FROM file('{data}', {fmt})", "CSV")
                return b""
            sql = body.decode()
            self.requests.append((sql, params))
            result = self.session.query(sql, "TabSeparated", params=params) if params else \
                self.session.query(sql, "TabSeparated")
            return result.bytes() if result is not None else b""
