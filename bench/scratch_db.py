"""A throwaway billing database for a benchmark run, on the server BILLING_DATABASE_URL names."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import Iterator

import psycopg

from billing_pipeline.stores.postgres import migrate


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """Create and migrate ``<prefix>_<random>``, yield its URL, drop it afterwards."""
    admin = os.environ.get("BILLING_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = admin.rsplit("/", 1)[0] + "/" + name
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
