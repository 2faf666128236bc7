"""Where the dbt project lives, its manifest (parsed on first use, and again when a file of the
project changed), and the connection dbt gets: the billing database's, passed as environment
variables that dbt_models/profiles.yml reads."""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qsl, unquote, urlsplit

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_models"
TARGET_DIR = DBT_PROJECT_DIR / "target"
MANIFEST = TARGET_DIR / "manifest.json"
# dbt installed beside this Python (a venv's bin/, run without activating it), else on PATH.
DBT_EXECUTABLE = str(Path(sys.executable).with_name("dbt")) if Path(sys.executable).with_name("dbt").exists() \
    else (shutil.which("dbt") or "dbt")
_SOURCES = ("models", "seeds", "macros", "tests", "dbt_project.yml", "profiles.yml")


def _newest_source() -> float:
    newest = 0.0
    for name in _SOURCES:
        path = DBT_PROJECT_DIR / name
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        newest = max([newest, *(f.stat().st_mtime for f in files)])
    return newest


def manifest_path() -> Path:
    """The manifest, parsed now if missing or older than the project (no database needed). A lock
    keeps the webserver's and the daemon's processes from parsing at once."""
    if MANIFEST.exists() and MANIFEST.stat().st_mtime >= _newest_source():
        return MANIFEST
    TARGET_DIR.mkdir(parents=True, exist_ok=True)
    with open(TARGET_DIR / ".parse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not MANIFEST.exists() or MANIFEST.stat().st_mtime < _newest_source():
            from dbt.cli.main import dbtRunner

            result = dbtRunner().invoke(["parse", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir",
                                         str(DBT_PROJECT_DIR), "--target-path", str(TARGET_DIR), "--quiet"])
            if not result.success:
                raise RuntimeError(f"dbt parse of {DBT_PROJECT_DIR} failed: {result.exception}")
    return MANIFEST


def connection_env(db_url: str) -> dict[str, str]:
    """profiles.yml's variables for a postgresql:// URL (a socket directory in ?host= included, as
    the embedded server gives it)."""
    url = urlsplit(db_url)
    query = dict(parse_qsl(url.query))
    return {"BILLING_DBT_HOST": query.get("host") or url.hostname or "127.0.0.1",
            "BILLING_DBT_PORT": str(query.get("port") or url.port or 5432),
            "BILLING_DBT_USER": unquote(url.username or "postgres"),
            "BILLING_DBT_PASSWORD": unquote(url.password or ""),
            "BILLING_DBT_DBNAME": url.path.lstrip("/") or "billing"}


@contextmanager
def dbt_connection(db_url: str) -> Iterator[None]:
    """The dbt subprocess inherits this process's environment: set the connection for its run."""
    values = connection_env(db_url)
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
