"""The usage store: ClickHouse, reached as a server (clickhouse-connect) or embedded (chdb).

Both backends take the same SQL text with ClickHouse's own bound parameters (``{name:Type}``) and
return Arrow tables. Values are always sent as parameters, never formatted into the SQL, so a
value containing SQL is only ever data.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from .. import settings
from ..errors import ConfigError, StoreUnavailableError
from .urls import ambiguous_url_message, redact, userinfo_is_ambiguous

log = logging.getLogger(__name__)


_INCLUDE = re.compile(r"/\* include (\w+) \*/")


def sql_text(name: str) -> str:
    """A named SQL file shipped with the package (billing_pipeline/stores/sql/<name>.sql).

    ``/* include <other> */`` is replaced by that file's expression (its leading ``--`` comment
    lines dropped), so a rule several queries share, such as which raw rows are quarantined, is
    written once."""
    text = resources.files(__package__).joinpath("sql", f"{name}.sql").read_text()
    return _INCLUDE.sub(lambda m: sql_expression(m.group(1)), text)


def sql_expression(name: str) -> str:
    """A named SQL file's text without its leading comment: what an include comment splices in."""
    lines = sql_text(name).splitlines()
    while lines and lines[0].lstrip().startswith("--"):
        lines.pop(0)
    return "\n".join(lines).strip()


def sql_sha256(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


def format_parameter(value: Any) -> str:
    """The text form ClickHouse parses for a bound parameter, identical for both backends."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_array_element(v) for v in value) + "]"
    return str(value)


def _array_element(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return format_parameter(value)


class UsageStore(Protocol):
    engine: str
    # whether the engine runs in this process (chdb): its memory is then ours to bound
    in_process: bool

    def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pa.Table: ...

    def stream_arrow(self, sql: str, parameters: Mapping[str, Any] | None = None,
                     rows_per_batch: int = 262_144) -> Iterator[pa.RecordBatch]:
        """The result in batches as ClickHouse produces it, never whole: a big result held whole is
        held twice at the end (the engine's buffer and Arrow's copy of it)."""

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None: ...

    def insert_arrow(self, table: str, data: pa.Table) -> None: ...

    def release_memory(self) -> None:
        """Give the memory a finished query freed back to the operating system, where it is ours."""

    def close(self) -> None: ...


# chdb allows one open session per process; keep it and reuse it for the same path.
_chdb_sessions: dict[str, Any] = {}


@atexit.register
def _close_chdb_sessions() -> None:
    # Closing before interpreter teardown spares chdb's noisy shutdown path.
    while _chdb_sessions:
        _chdb_sessions.popitem()[1].close()


@dataclass
class ChdbStore:
    """ClickHouse's engine in-process, data persisted at ``path``."""

    path: str
    in_process = True  # (not a field)

    def __post_init__(self) -> None:
        from chdb import session as chdb_session

        Path(self.path).mkdir(parents=True, exist_ok=True)
        key = str(Path(self.path).resolve())
        if key not in _chdb_sessions:
            for other in list(_chdb_sessions):
                _chdb_sessions.pop(other).close()
            try:
                _chdb_sessions[key] = chdb_session.Session(key)
            except RuntimeError as exc:
                raise StoreUnavailableError(_unopenable_message(key, exc)) from None
        self._session = _chdb_sessions[key]
        version = self._session.query("SELECT version()", "CSV").bytes().decode().strip().strip('"')
        self.engine = f"chdb {version}"

    def _run(self, sql: str, fmt: str, parameters: Mapping[str, Any] | None):
        params = {k: format_parameter(v) for k, v in (parameters or {}).items()}
        return self._session.query(sql, fmt, params=params) if params else self._session.query(sql, fmt)

    def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pa.Table:
        return self._run(sql, "ArrowTable", parameters)

    def stream_arrow(self, sql: str, parameters: Mapping[str, Any] | None = None,
                     rows_per_batch: int = 262_144) -> Iterator[pa.RecordBatch]:
        params = {k: format_parameter(v) for k, v in (parameters or {}).items()}
        # (leaving the block early cancels the query)
        with self._session.send_query(sql, "Arrow", params=params or None) as stream:
            yield from stream.record_batch(rows_per_batch)

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        self._run(sql, "CSV", parameters)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "batch.parquet"
            pq.write_table(data, file)
            columns = ", ".join(f"`{c}`" for c in data.column_names)
            self._run(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM file({{path:String}}, Parquet)",
                      "CSV", {"path": str(file)})

    def release_memory(self) -> None:
        # ClickHouse's allocator keeps what a query freed for the next one; in this process that
        # is our memory: at 1B requests and 100k contracts a day's copies query left 164 MB
        # behind for the next, its deliveries 608 MB.
        self._run("SYSTEM JEMALLOC PURGE", "CSV", None)

    def close(self) -> None:
        """chdb sessions live for the process; closing one would break other users in it."""


def _unopenable_message(path: str, exc: Exception) -> str:
    """Why chdb would not open ``path``, in words: most often another process has it open (chdb is
    one process's engine), which ClickHouse records in the directory's status file; chdb itself
    only says 'Error initializing EmbeddedServer'."""
    holder = None
    try:
        status = (Path(path) / "status").read_text()
        pid = int(status.split("PID:", 1)[1].split()[0])
        os.kill(pid, 0)  # raises unless that process still runs
        holder = pid
    except (OSError, IndexError, ValueError):
        pass
    fix = (f"wait for it to finish (with the embedded store, runs and commands take turns), or set "
           f"{settings.CLICKHOUSE_URL_ENV} to use a ClickHouse server, which any number of processes share")
    if holder is not None and holder != os.getpid():
        return f"the embedded usage store (chdb) at {path} is open in another process (pid {holder}); {fix}"
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"cannot open the embedded usage store (chdb) at {path}: {first_line}; if another process has it open, {fix}"


def release_chdb_sessions() -> None:
    """Close this process's chdb session, so another process can open its data directory."""
    for key in list(_chdb_sessions):
        _chdb_sessions.pop(key).close()


def _reason(exc: Exception) -> str:
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] ([^\"')]+)", text)
    if errno:
        return errno.group(1).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


@dataclass
class ClickHouseServerStore:
    """A ClickHouse server over HTTP(S) through clickhouse-connect."""

    url: str
    user: str | None = None
    password: str | None = None
    in_process = False  # (not a field)

    def __post_init__(self) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import Error as ClickHouseError

        if userinfo_is_ambiguous(self.url):
            raise ConfigError(ambiguous_url_message(settings.CLICKHOUSE_URL_ENV))
        if urlsplit(self.url).scheme not in ("http", "https", "clickhouse", "clickhouses"):
            raise ConfigError(f"{settings.CLICKHOUSE_URL_ENV}={redact(self.url)!r} is not a ClickHouse URL; "
                              "expected http(s)://host:8123[/database]")
        kwargs = {}
        if self.user:
            kwargs["username"] = self.user
        if self.password:
            kwargs["password"] = self.password
        driver_log = logging.getLogger("clickhouse_connect")
        level = driver_log.level
        driver_log.setLevel(logging.CRITICAL)  # its own "unexpected exception" line would duplicate ours
        try:
            self._client = clickhouse_connect.get_client(dsn=self.url, connect_timeout=10, **kwargs)
        except ClickHouseError as exc:
            raise StoreUnavailableError(
                f"cannot reach ClickHouse at {settings.CLICKHOUSE_URL_ENV}={redact(self.url)!r}: {_reason(exc)}"
            ) from None
        except ValueError as exc:
            raise ConfigError(f"{settings.CLICKHOUSE_URL_ENV}={redact(self.url)!r} is not a ClickHouse URL: {exc}") from None
        finally:
            driver_log.setLevel(level)
        self.engine = f"clickhouse {self._client.server_version}"

    @staticmethod
    def _params(parameters):
        # clickhouse-connect escapes strings and formats arrays for server-side binding itself;
        # only timestamps are pre-formatted, to keep their milliseconds.
        return {k: format_parameter(v) if isinstance(v, (datetime, date)) else v
                for k, v in (parameters or {}).items()}

    def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pa.Table:
        return self._client.query_arrow(sql, parameters=self._params(parameters), use_strings=True)

    def stream_arrow(self, sql: str, parameters: Mapping[str, Any] | None = None,
                     rows_per_batch: int = 262_144) -> Iterator[pa.RecordBatch]:
        # the server's blocks, as record batches, as they arrive (their size is the server's to choose)
        with self._client.query_arrow_stream(sql, parameters=self._params(parameters), use_strings=True) as stream:
            yield from stream

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        self._client.command(sql, parameters=self._params(parameters))

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        self._client.insert_arrow(table, data)

    def release_memory(self) -> None:
        """The server's memory is the server's to manage."""

    def close(self) -> None:
        self._client.close()


def open_usage_store(url: str | None = None, user: str | None = None, password: str | None = None,
                     chdb_path: str | None = None) -> UsageStore:
    """A server store when a URL is given, else chdb at ``chdb_path`` (default: the state dir)."""
    if url:
        return ClickHouseServerStore(url, user, password)
    return ChdbStore(chdb_path or str(settings.chdb_path()))


def ensure_schema(store: UsageStore) -> None:
    """Create requests_raw, and add or bring up to date the columns ClickHouse computes at insert.

    request_key: cityHash64(request_id). Deduplication finds repeated ids by this fixed-width key
    instead of re-reading and re-hashing the 32-byte strings every close; it is only a candidate
    filter (copies are then matched on request_id itself), so a collision merges nothing.
    row_defect: why the row alone cannot be billed (usage_row_defect.sql), decided once.
    On a table created before them they are metadata only: parts written earlier compute them
    when read. The rule's hash is kept in the column's comment; when the rule changes, the column
    is redefined and recomputed for every stored row before the store is used.
    """
    store.command(sql_text("requests_raw"))
    store.command("ALTER TABLE requests_raw ADD COLUMN IF NOT EXISTS request_key UInt64 "
                  "MATERIALIZED cityHash64(request_id)")
    rule = sql_expression("usage_row_defect")
    comment = f"usage_row_defect.sql {hashlib.sha256(rule.encode()).hexdigest()[:16]}"
    present = store.query_arrow("SELECT comment FROM system.columns WHERE database = currentDatabase() "
                                "AND table = 'requests_raw' AND name = 'row_defect'").to_pylist()
    # (DDL takes no bound parameters; the comment is a file name and hex digits)
    definition = f"row_defect LowCardinality(String) MATERIALIZED ({rule}) COMMENT '{comment}'"
    if not present:
        store.command(f"ALTER TABLE requests_raw ADD COLUMN IF NOT EXISTS {definition}")
    elif present[0]["comment"] != comment:
        store.command(f"ALTER TABLE requests_raw MODIFY COLUMN {definition}")
        store.command("ALTER TABLE requests_raw MATERIALIZE COLUMN row_defect SETTINGS mutations_sync = 2")
