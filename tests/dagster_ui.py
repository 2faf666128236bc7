"""`billing ui` (webserver and daemon) started on loopback over a state directory, for tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


@contextmanager
def running_ui(state_dir: Path) -> Iterator[int]:
    """Yields the port once the UI prints its URL; stops webserver and daemon afterwards."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLING_", "DAGSTER_"))}
    env["BILLING_STATE_DIR"] = str(state_dir)
    ui = subprocess.Popen([sys.executable, "-m", "billing_pipeline.cli", "ui", "--port", str(port)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        line = ""
        while time.monotonic() < deadline and "Dagster UI:" not in line:
            line = ui.stdout.readline()
            assert line or ui.poll() is None, "billing ui exited before printing its URL"
        assert f"Dagster UI: http://127.0.0.1:{port}" in line
        yield port
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=60)
