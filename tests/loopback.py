"""A local HTTP server on a free loopback port, run in a thread for the length of a with-block."""

from __future__ import annotations

import http.server
import socket
import threading


class LoopbackServer:
    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class KeepAliveHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, as API clients expect; every method goes to ``_serve(method, body)``,
    only once the request's whole body has arrived."""

    protocol_version = "HTTP/1.1"

    def handle(self):
        try:
            super().handle()
        except ConnectionResetError:  # a client killed or gone between two requests on its connection
            pass

    def setup(self):
        super().setup()
        # headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every answer
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self, method: str, body: bytes) -> None:
        raise NotImplementedError

    def _dispatch(self, method: str) -> None:
        body = self._read_body()
        if body is not None:
            self._serve(method, body)

    def _read_body(self) -> bytes | None:
        """The request's body, or None when the client went away before sending all of it (killed
        between its headers and its body, or halfway through). Stripe and Parasut act on no request
        they have not fully received, so neither does a local server, and a proxy forwards nothing:
        a truncated form would be carried out with other parameters than the client meant."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            self.close_connection = True
            return None
        return body

    def _reply(self, data: bytes) -> None:
        """End the headers and write the body; a client that has gone away is not an error here."""
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):  # noqa: N802
        self._dispatch("GET")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self):  # noqa: N802
        self._dispatch("PUT")

    def do_PATCH(self):  # noqa: N802
        self._dispatch("PATCH")

    def do_DELETE(self):  # noqa: N802
        self._dispatch("DELETE")

    def log_message(self, *args):
        pass
