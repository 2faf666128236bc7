"""A loopback proxy that kill -9s its client process between two external calls.

Placed in front of the local Stripe and Parasut servers. Armed with a process id, it forwards the
client's requests and, once a call that no earlier client made (method, path and body never seen)
has been carried out upstream, sends SIGKILL to the client before answering it: the call took
effect but the client never learned its outcome, which is the worst moment to die. Attempt after
attempt, each dies right after the next new call of the sequence, so every gap between two calls of
an uninterrupted run is a crash point once. One ``KillSwitch`` serves every proxy sharing it, so the
sequence runs across both sinks in the order their calls are made.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import urllib.parse

from loopback import KeepAliveHandler, LoopbackServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class KillSwitch:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.seen: set[tuple[str, str, bytes]] = set()
        self.calls = 0
        self.killed_at: list[str] = []  # "METHOD path" of each call after which a client died

    def arm(self, pid: int) -> None:
        with self.lock:
            self.pid = pid

    def disarm(self) -> None:
        with self.lock:
            self.pid = None

    def after_call(self, method: str, path: str, body: bytes) -> bool:
        """Note a call carried out upstream; True if its client has just been killed."""
        with self.lock:
            self.calls += 1
            new = (method, path, body) not in self.seen
            self.seen.add((method, path, body))
            if self.pid is None or not new:
                return False
            os.kill(self.pid, signal.SIGKILL)
            self.killed_at.append(f"{method} {urllib.parse.urlsplit(path).path}")
            self.pid = None
            return True


class KillProxy(LoopbackServer):
    def __init__(self, upstream: str, switch: KillSwitch):
        target = urllib.parse.urlsplit(upstream)

        class Handler(KeepAliveHandler):
            def _serve(self, method: str, body: bytes) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                try:
                    conn.request(method, self.path, body=body or None, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                finally:
                    conn.close()
                if switch.after_call(method, self.path, body):
                    self.close_connection = True  # the client is gone; nothing to answer
                    return
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self._reply(data)

        super().__init__(Handler)
