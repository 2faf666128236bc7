"""usage_rollups: ClickHouse requests_raw -> PostgreSQL usage_rollups, one UTC day per partition."""

from __future__ import annotations

import logging
import math
import threading
import uuid
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from psycopg import sql

from ..domain.chains import known_chains
from ..domain.local_days import cut_parameters
from ..errors import MissingDataError
from ..stores.clickhouse import UsageStore, sql_expression, sql_sha256, sql_text
from ..stores.meter_sql import MeterSet
from ..stores.postgres import transaction
from .copy import copy_arrow

log = logging.getLogger(__name__)

ROLLUP_SCHEMA = pa.schema([
    ("day", pa.date32()),
    ("org_id", pa.string()),
    ("project_id", pa.string()),
    ("chain", pa.string()),
    ("requests", pa.int64()),
    ("successful_requests", pa.int64()),
    ("error_requests", pa.int64()),
    ("bytes_out", pa.int64()),
])


@dataclass(frozen=True)
class DayTotals:
    day: date
    raw_rows: int
    duplicate_rows: int
    quarantined_rows: int
    requests: int
    bytes_out: int


@dataclass(frozen=True)
class RollupSummary:
    start: date
    end: date
    rows: int
    days: list[DayTotals]
    preview: pa.Table
    source_engine: str
    source_query_sha256: str
    seconds: dict[str, float]  # clickhouse / postgres wall time

    @property
    def requests(self) -> int:
        return sum(d.requests for d in self.days)

    @property
    def raw_rows(self) -> int:
        return sum(d.raw_rows for d in self.days)

    @property
    def duplicate_rows(self) -> int:
        return sum(d.duplicate_rows for d in self.days)

    @property
    def quarantined_rows(self) -> int:
        return sum(d.quarantined_rows for d in self.days)

    @property
    def bytes_out(self) -> int:
        return sum(d.bytes_out for d in self.days)


KEYS = ["day", "org_id", "project_id", "chain"]
QUARANTINE_COLUMNS = ["day", "reason", "org_id", "project_id", "chain", "raw_rows"]
COUNTERS = ["requests", "successful_requests", "error_requests", "bytes_out"]


def rollup_schema(meters: MeterSet) -> pa.Schema:
    return pa.schema(list(ROLLUP_SCHEMA) + [(c, pa.int64()) for c in meters.columns])


class RollupConsistencyError(RuntimeError):
    pass


def _row_keys(table: pa.Table) -> pa.Array:
    """One string per row naming its (day, org, project, chain); ids never hold a NUL (usage_billable)."""
    columns = [pc.cast(table.column("day"), pa.string())] + [table.column(c) for c in KEYS[1:]]
    return pc.binary_join_element_wise(*columns, "\x00").combine_chunks()


def subtract_duplicates(deliveries: pa.Table | Iterable[pa.RecordBatch], duplicates: pa.Table,
                        meters: MeterSet) -> pa.Table:
    """Billable rollups = every delivery minus the repeated ones, per key, in the deliveries' order.

    The deliveries may come as a table or as a stream of batches (a key in one batch only, as
    GROUP BY gives them): each batch is corrected as it arrives, so a window's deliveries are
    never held twice. Vectorised in Arrow: each delivery's key is looked up among the few
    duplicated ones (a hash lookup, no join and no re-sort; ClickHouse returns them sorted by key,
    the order PostgreSQL's primary key appends fastest). Additive meters are corrected like the
    counters; MAX, UNIQUE_COUNT and LATEST meters keep their value over all deliveries. Keys left
    with no request are dropped: all their deliveries were copies of requests counted elsewhere.
    """
    schema = rollup_schema(meters)
    counters = COUNTERS + meters.additive_columns
    duplicates = duplicates.select(KEYS + counters).cast(pa.schema([schema.field(n) for n in KEYS + counters]))
    duplicate_keys = _row_keys(duplicates) if duplicates.num_rows else None
    pieces, matched = [], 0
    for piece in ([deliveries] if isinstance(deliveries, pa.Table) else deliveries):
        piece = (piece if isinstance(piece, pa.Table) else pa.Table.from_batches([piece]))
        piece = piece.select(schema.names).cast(schema)
        if duplicate_keys is not None and piece.num_rows:
            piece, found = _subtract_piece(piece, duplicates, duplicate_keys, counters)
            matched += found
        pieces.append(piece)
    if matched != duplicates.num_rows:
        raise RollupConsistencyError(
            "duplicate copies do not match the delivered keys; did requests_raw change during the rollup? re-run it")
    return pa.concat_tables(pieces) if pieces else schema.empty_table()


def _subtract_piece(piece: pa.Table, duplicates: pa.Table, duplicate_keys: pa.Array,
                    counters: list[str]) -> tuple[pa.Table, int]:
    """One batch of deliveries minus their copies; also how many copy keys it held."""
    # for each delivery row, the duplicates row of the same key (null where its key had no copy)
    match = pc.index_in(_row_keys(piece), value_set=duplicate_keys)
    columns = [pc.subtract(piece.column(c), pc.fill_null(pc.take(duplicates.column(c), match), 0))
               if c in counters else piece.column(c) for c in piece.schema.names]
    result = pa.Table.from_arrays(columns, schema=piece.schema)
    least = pc.min(result.column("requests")).as_py()
    if least < 0:
        raise RollupConsistencyError(
            "more copies than deliveries for a key; did requests_raw change during the rollup? re-run it")
    # filtering copies every column: only when some key is left with nothing
    result = result.filter(pc.greater(result.column("requests"), 0)) if least == 0 else result
    return result, pc.sum(pc.is_valid(match)).as_py() or 0


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days)]


def _check_no_missing_days(expected: list[date], present: set[date]) -> None:
    missing = [d for d in expected if d not in present]
    if missing:
        shown = ", ".join(d.isoformat() for d in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise MissingDataError(
            f"requests_raw has no rows for {len(missing)} day(s): {shown} (usage_rollups partition(s) "
            f"{missing[0].isoformat()}{'' if len(missing) == 1 else ' ...'}); was ingestion down? Reload those days, "
            "or run with allow_empty_days: true if the days really had no traffic"
        )


def _day_totals(expected: list[date], source: list[dict], rollups: pa.Table) -> list[DayTotals]:
    """Per day: what ClickHouse holds, and how much of it the rollups bill (the rest are copies)."""
    raw = {row["day"]: row for row in source}
    billed = {row["day"]: row for row in
              rollups.group_by("day").aggregate([("requests", "sum"), ("bytes_out", "sum")]).to_pylist()}
    totals = []
    for d in expected:
        r = raw.get(d, {"raw_rows": 0, "quarantined_rows": 0})
        b = billed.get(d, {"requests_sum": 0, "bytes_out_sum": 0})
        totals.append(DayTotals(day=d, raw_rows=r["raw_rows"], quarantined_rows=r["quarantined_rows"],
                                duplicate_rows=r["raw_rows"] - r["quarantined_rows"] - b["requests_sum"],
                                requests=b["requests_sum"], bytes_out=b["bytes_out_sum"]))
    return totals


@dataclass(frozen=True)
class CollectedUsage:
    """A window of usage read from a source, ready to be written to PostgreSQL."""

    rollups: pa.Table  # rollup_schema(meters)
    days: list[DayTotals]
    quarantined: pa.Table  # QUARANTINE_COLUMNS
    before_local_midnight: pa.Table
    source_engine: str
    source_query_sha256: str
    seconds: float = 0.0  # spent reading it from the source


def roll_up_usage(store: UsageStore, db_url: str, start: datetime, end: datetime, *,
                  dedup_lookback_hours: int = 24, allow_empty_days: bool = False,
                  run_id: str | None = None, meters: MeterSet | None = None) -> RollupSummary:
    """Aggregate [start, end) inside ClickHouse and replace those days in PostgreSQL atomically.

    The window is streamed a few UTC days at a time (plan_chunks): ClickHouse aggregates the next
    chunk while PostgreSQL takes in the current one, so memory holds two chunks of rollup rows,
    however long the window. A copy of a request is recognised when it comes within
    dedup_lookback_hours of the first delivery (or anywhere earlier in the same chunk). Every
    declared meter is computed in the same queries (catalog/meters.yaml by default)."""
    meters = meters or MeterSet.load()
    params = {"dedup_lookback_hours": dedup_lookback_hours, "known_chains": list(known_chains()),
              **meters.parameters()}
    expected = _days(start.date(), end.date())
    source = source_totals(store, start, end)
    if not allow_empty_days:
        _check_no_missing_days(expected, {row["day"] for row in source})
    zones = billing_timezones(db_url, start.date(), end.date())
    source_by_day = {row["day"]: row for row in source}

    def collect(window: tuple[datetime, datetime], previous_released: threading.Event) -> CollectedUsage:
        days = _days(window[0].date(), window[1].date())
        window_source = [source_by_day.get(d, {"day": d, "raw_rows": 0, "quarantined_rows": 0}) for d in days]
        # Two windows within the bounds fit in memory side by side, so ClickHouse works on this one
        # while PostgreSQL takes in the one before. A window past them (a day bigger than the
        # bounds on its own: 30 M raw rows and 2 M rollup rows at 1B requests and 100k contracts)
        # runs its big queries only once the previous one is written and its memory given back.
        oversized = (sum(d["raw_rows"] for d in window_source) > MAX_CHUNK_RAW_ROWS
                     or sum(d.get("rollup_keys", 0) for d in window_source) > MAX_CHUNK_ROLLUP_ROWS)
        return collect_usage(store, meters, {**params, "window_start": window[0], "window_end": window[1]}, zones,
                             window_source, previous_released if oversized else None)

    return write_rollups(db_url, start, end, prefetched(collect, plan_chunks(start, end, source)), meters, run_id)


def source_totals(store: UsageStore, start: datetime, end: datetime) -> list[dict]:
    """Per UTC day of [start, end): raw rows, quarantined rows and about how many rollup rows."""
    return store.query_arrow(sql_text("usage_source_totals"), {
        "window_start": start, "window_end": end, "known_chains": list(known_chains())}).to_pylist()


# Bounds on what ClickHouse aggregates per query. Rollup rows are held in Arrow, two chunks in
# flight (100k contracts on 20 chains make about 1.2 M a day); raw rows set the size of ClickHouse's
# hash tables for the copies and the reconciliation check. A day alone may exceed them: days are
# never split. Bigger chunks spread the 24 h read before each chunk (for copies of its requests) and
# each query's fixed cost over more days: 10k contracts' 100M requests (3 M raw rows a day) rolled
# up in 63.7 s and 965 MiB in three-day chunks (10 M), 54.7 s and 1,165 MiB in five (16 M), 49.0 s
# and 1,266 MiB in six (20 M), 47.4 s and 1,447 MiB in seven (25 M; bench/rollup_profile.py).
MAX_CHUNK_ROLLUP_ROWS = 1_500_000
MAX_CHUNK_RAW_ROWS = 20_000_000
MAX_CHUNK_DAYS = 7


def plan_chunks(start: datetime, end: datetime, source: list[dict]) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at UTC midnights into windows of consecutive days, each as long as it stays
    within the bounds above (by the day's ``rollup_keys`` and ``raw_rows`` in ``source``)."""
    size = {row["day"]: (row.get("rollup_keys", 0), row["raw_rows"]) for row in source}
    windows: list[tuple[datetime, datetime]] = []
    first, keys, raw, days = start, 0, 0, 0
    for day in _days(start.date(), end.date()):
        day_keys, day_raw = size.get(day, (0, 0))
        if days and (keys + day_keys > MAX_CHUNK_ROLLUP_ROWS or raw + day_raw > MAX_CHUNK_RAW_ROWS
                     or days == MAX_CHUNK_DAYS):
            midnight = datetime.combine(day, datetime.min.time(), tzinfo=start.tzinfo)
            windows.append((first, midnight))
            first, keys, raw, days = midnight, 0, 0, 0
        keys, raw, days = keys + day_keys, raw + day_raw, days + 1
    if first < end:
        windows.append((first, end))
    return windows


def collect_usage(store: UsageStore, meters: MeterSet, params: dict, zones: dict[str, str],
                  source: list[dict], previous_released: threading.Event | None = None) -> CollectedUsage:
    """One window's rollups, quarantine and local-midnight split, read from ClickHouse. The big
    queries wait for ``previous_released`` if given: the previous window written and let go of."""
    t0 = time.perf_counter()
    days = _days(params["window_start"].date(), params["window_end"].date())
    deliveries_sql = meters.deliveries_sql(sql_text("usage_rollups"))
    passes = copy_key_passes(store, source, params["dedup_lookback_hours"])
    # Order matters for memory at a billion requests a month. The small queries first, while
    # PostgreSQL takes in the previous window; then, once it is written (if waited for), its
    # memory goes back (this thread allocated it, so this thread gives it back). Then the copies,
    # whose query needs the most memory and whose result is small, so that the deliveries (a row
    # per key) never sit in memory beside its hash tables. The deliveries are streamed: held whole,
    # a 1B-request day's 2 M rows were in ClickHouse's result and in Arrow's copy of it at once.
    window = f"{days[0]}..{days[-1]}" if days else "-"
    quarantined = store.query_arrow(sql_text("usage_quarantine"), params).select(QUARANTINE_COLUMNS)
    log.debug("usage %s: quarantine read; splitting at local midnights", window)
    before_local_midnight = _before_local_midnight(store, meters, params, zones, days, passes)
    if previous_released is not None:
        log.debug("usage %s: waiting for the previous window to be written", window)
        previous_released.wait()
    give_back_memory(store)
    log.debug("usage %s: copies query (candidates in %d pass%s)", window, passes, "" if passes == 1 else "es")
    duplicates = query_duplicates(store, meters, params, passes)
    give_back_memory(store)
    log.debug("usage %s: deliveries query (%s copy keys), its copies subtracted batch by batch", window,
              f"{duplicates.num_rows:,}")
    rollups = subtract_duplicates(store.stream_arrow(deliveries_sql, params), duplicates, meters)
    del duplicates
    give_back_memory(store)
    log.debug("usage %s: collected %s rollup rows", window, f"{rollups.num_rows:,}")
    return CollectedUsage(rollups, _day_totals(days, source, rollups), quarantined, before_local_midnight,
                          store.engine, sql_sha256(deliveries_sql + duplicates_sql(meters)), time.perf_counter() - t0)


COPY_CANDIDATES = "/* copy candidates */"
KEY_PASS = "/* key pass */"
# Keys one pass of usage_copy_candidates.sql may hash, where the engine's memory is ours (chdb). A
# 1B-request day at 100k contracts and its lookback hold 61 M keys; a pass reads them all again. On
# the full month's parts, that day's copies' query took (bench/rollup_profile.py --keys-per-pass):
# one pass 20.4 s and 1,457 MiB of RSS, two 25.7 s and 1,302 MiB, four 35.4 s and 1,097 MiB, while
# the day's deliveries query peaks at 1,370-1,386 MiB whatever the passes: two keep the copies under
# it for 10 s a day less than four. Below this (10k contracts' 100M requests: 21 M keys a six-day
# chunk) the candidates stay one subquery of the copies' query.
COPY_KEYS_PER_PASS = 32_000_000


def copy_key_passes(store: UsageStore, source: list[dict], lookback_hours: int) -> int:
    """How many passes find a window's copy candidates: one, unless the engine runs in this process
    and the window with its lookback holds more request keys than COPY_KEYS_PER_PASS."""
    if not getattr(store, "in_process", False) or not source:
        return 1
    rows = sum(d["raw_rows"] for d in source)
    keys = rows * (1 + lookback_hours / (24 * len(source)))
    return max(1, math.ceil(keys / COPY_KEYS_PER_PASS))


def duplicates_sql(meters: MeterSet, before_local_midnight: bool = False, candidates_table: str | None = None) -> str:
    """usage_duplicates.sql with its candidates: their query, or the table passes filled."""
    candidates = (f"SELECT request_key FROM {candidates_table}" if candidates_table
                  else sql_expression("usage_copy_candidates").replace(KEY_PASS, ""))
    return meters.duplicates_sql(sql_text("usage_duplicates").replace(COPY_CANDIDATES, candidates),
                                 before_local_midnight)


def query_duplicates(store: UsageStore, meters: MeterSet, params: dict, passes: int,
                     before_local_midnight: bool = False) -> pa.Table:
    """The copies of a window (usage_duplicates.sql), their candidates found in ``passes`` passes
    over shares of the key space, one after the other, into a table of this call's own."""
    if passes == 1:
        return store.query_arrow(duplicates_sql(meters, before_local_midnight), params)
    table = f"rollup_copy_candidates_{uuid.uuid4().hex[:12]}"  # a name of our making, never input
    store.command(f"CREATE TABLE {table} (request_key UInt64) ENGINE = Memory")
    candidates, settings = sql_expression("usage_copy_candidates"), _copies_settings()
    try:
        for key_pass in range(passes):
            share = candidates.replace(KEY_PASS, f"AND request_key % {passes} = {key_pass}")
            store.command(f"INSERT INTO {table} {meters.duplicates_sql(share, before_local_midnight)}\n{settings}",
                          params)
            store.release_memory()
        return store.query_arrow(duplicates_sql(meters, before_local_midnight, table), params)
    finally:
        store.command(f"DROP TABLE IF EXISTS {table}")


def _copies_settings() -> str:
    """usage_duplicates.sql's SETTINGS clause (its spill bound), for each pass to run under too."""
    return sql_text("usage_duplicates").rstrip().rsplit("\n", 1)[-1]


def give_back_memory(store: UsageStore) -> None:
    """Return what was freed to the operating system, so that the next query does not come on top
    of it. Both allocators keep freed memory for reuse: ClickHouse's kept about 600 MB after a
    1B-request day's deliveries query at 100k contracts, Arrow's about 700 MB after their
    subtraction (its unused pages go back per thread, those freed by another thread included:
    call it in the thread that allocated)."""
    store.release_memory()
    pa.default_memory_pool().release_unused()


T = TypeVar("T")
R = TypeVar("R")


def prefetched(work: Callable[[T, threading.Event], R], items: list[T]) -> Iterator[R]:
    """work(item, released) for each item in order, the next one computed in a worker thread while
    the caller consumes the current one (ClickHouse aggregates chunk N+1 while PostgreSQL copies
    chunk N). ``released`` is set once the caller is done with the previous result and has let go
    of it, for work that needs its memory back before a big step."""
    if not items:
        return
    released = threading.Event()
    released.set()  # nothing held before the first
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollup-prefetch") as pool:
        pending = pool.submit(work, items[0], released)
        for following in items[1:] + [None]:
            current = pending.result()
            released = threading.Event()
            pending = pool.submit(work, following, released) if following is not None else None
            try:
                yield current
            except GeneratorExit:
                if pending is not None:
                    pending.cancel()
                raise
            finally:
                del current
                released.set()  # (also when the caller stops early: the worker must not wait forever)


def top_org_chains(conn, start: date, end: date, n: int = 10) -> pa.Table:
    """The window's top org-chains by requests, summed by PostgreSQL from the rows just written.

    Summed there rather than kept as running sums beside the chunks: 100k contracts on 20 chains
    are 2 M org-chains, whose running sums were the rollup's biggest allocation."""
    with conn.cursor() as cur:
        cur.execute("SET LOCAL work_mem = '256MB'")  # a hash aggregate in memory, not a spill to disk
        cur.execute("""SELECT org_id, chain, sum(requests)::bigint, sum(bytes_out)::bigint FROM usage_rollups
                       WHERE day >= %s AND day < %s GROUP BY org_id, chain
                       ORDER BY 3 DESC, org_id, chain LIMIT %s""", (start, end, n))
        rows = cur.fetchall()
    return pa.table({"org_id": pa.array([r[0] for r in rows], pa.string()),
                     "chain": pa.array([r[1] for r in rows], pa.string()),
                     "requests_sum": pa.array([r[2] for r in rows], pa.int64()),
                     "bytes_out_sum": pa.array([r[3] for r in rows], pa.int64())})


def write_rollups(db_url: str, start: datetime, end: datetime, collected: Iterable[CollectedUsage],
                  meters: MeterSet, run_id: str | None) -> RollupSummary:
    """Replace [start, end) of every rollup table in one transaction, chunk by chunk as they come."""
    t0 = time.perf_counter()
    days, rows, engine, query_sha = [], 0, "", ""
    read_seconds = write_seconds = 0.0
    with transaction(db_url) as conn:
        add_meter_columns(conn, meters)
        add_meter_columns(conn, meters, "usage_before_local_midnight")
        months = clear_rollups(conn, start.date(), end.date())
        for table in ("usage_rollup_days", "quarantined_usage", "usage_before_local_midnight"):
            conn.execute(sql.SQL("DELETE FROM {} WHERE day >= %s AND day < %s").format(sql.Identifier(table)),
                         (start.date(), end.date()))
        emptied = [m for m in months if m.emptied]
        for chunk in collected:
            t = time.perf_counter()
            log.debug("usage %s: writing to PostgreSQL", chunk.days[0].day if chunk.days else "-")
            copy_rollups(conn, chunk.rollups, emptied)
            copy_arrow(conn, "quarantined_usage", chunk.quarantined)
            copy_arrow(conn, "usage_before_local_midnight", chunk.before_local_midnight)
            write_seconds += time.perf_counter() - t
            read_seconds += chunk.seconds
            days += chunk.days
            rows += chunk.rollups.num_rows
            # a month at a billion requests rolls up for many minutes: say how far it has got
            log.info("usage rolled up to %s: %s raw rows -> %s rollup rows (ClickHouse %.1fs, PostgreSQL %.1fs)",
                     chunk.days[-1].day if chunk.days else "-", f"{sum(d.raw_rows for d in chunk.days):,}",
                     f"{chunk.rollups.num_rows:,}", chunk.seconds, time.perf_counter() - t)
            engine, query_sha = chunk.source_engine, chunk.source_query_sha256
            del chunk  # written: let it go before the next chunk arrives, and give back its CSV buffers
            pa.default_memory_pool().release_unused()
        t = time.perf_counter()
        for month in months:
            # Fresh statistics, so rating plans a hash join over a month of rows, not a spilling sort.
            conn.execute(sql.SQL("ANALYZE {}").format(month.partition))
        with conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO usage_rollup_days (day, raw_rows, duplicate_rows, quarantined_rows, requests,
                       bytes_out, source_engine, source_query_sha256, dagster_run_id)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                [(t.day, t.raw_rows, t.duplicate_rows, t.quarantined_rows, t.requests, t.bytes_out,
                  engine, query_sha, run_id) for t in days],
            )
        preview = top_org_chains(conn, start.date(), end.date())
        write_seconds += time.perf_counter() - t
    return RollupSummary(start.date(), end.date(), rows, days, preview, engine, query_sha,
                         {"source": read_seconds, "postgres": write_seconds, "wall": time.perf_counter() - t0})


def _months(start: date, end: date) -> list[tuple[date, date]]:
    months, first = [], start.replace(day=1)
    while first < end:
        following = (first + timedelta(days=32)).replace(day=1)
        months.append((first, following))
        first = following
    return months


def _partition(first: date) -> sql.Identifier:
    return sql.Identifier(f"usage_rollups_{first:%Y_%m}")


def analyze_rollups(conn, start: date, end: date) -> None:
    """Fresh planner statistics for the monthly partitions holding [start, end), and for contracts.
    A month is COPY'd in whole, so autovacuum has seldom sampled it by the time it is rated; without
    statistics PostgreSQL takes the month's day range for 0.5% of its rows and sorts the 6.2 M it
    joins to contracts (the rating took as long as before the query was reshaped). ANALYZE samples
    30,000 rows: 0.4 s for a month of 10k contracts; it blocks no reader or writer."""
    for first, _ in _months(start, end):
        name = _partition(first)
        if conn.execute("SELECT to_regclass(%s)", (name.as_string(conn),)).fetchone()[0] is not None:
            conn.execute(sql.SQL("ANALYZE {}").format(name))
    conn.execute("ANALYZE contracts")


@dataclass(frozen=True)
class MonthPartition:
    partition: sql.Identifier  # usage_rollups_YYYY_MM
    first: date
    following: date
    emptied: bool  # truncated in this transaction, so COPY may write its rows frozen


def clear_rollups(conn, start: date, end: date) -> list[MonthPartition]:
    """Empty usage_rollups for [start, end), creating the monthly partitions it needs.

    A month covered whole is truncated (transactional in PostgreSQL, and it leaves no dead rows
    behind); part of a month is deleted. Returns the partitions touched.
    """
    months = []
    for first, following in _months(start, end):
        partition = _partition(first)
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF usage_rollups FOR VALUES FROM ({}) TO ({})")
                     .format(partition, sql.Literal(first), sql.Literal(following)))
        whole = start <= first and following <= end
        if whole:
            conn.execute(sql.SQL("TRUNCATE {}").format(partition))
        else:
            conn.execute("DELETE FROM usage_rollups WHERE day >= %s AND day < %s",
                         (max(start, first), min(end, following)))
        months.append(MonthPartition(partition, first, following, emptied=whole))
    return months


def copy_rollups(conn, rows: pa.Table, emptied: list[MonthPartition]) -> None:
    """COPY a chunk's rollup rows: those of a month truncated in this transaction straight into its
    partition with FREEZE, the others through usage_rollups.

    Rows COPY'd frozen are visible to every transaction once this one commits, as a TRUNCATE's
    emptiness already is, so no vacuum has to pass over the month later to freeze them: for the
    6.2 M rows of 10k contracts that pass took 2.0 s and a 0.4 s checkpoint, none after a frozen
    COPY (65.8 M rows at 100k contracts and 1B requests). The close's own time does not move (its
    PostgreSQL side overlaps ClickHouse's). The rows come sorted by day, so each target's rows
    are one slice (zero-copy); rows out of order would only make more, smaller COPYs."""
    if not rows.num_rows:
        return
    day = rows.column("day").to_numpy()  # datetime64[D]
    targets = np.zeros(rows.num_rows, dtype=np.int8)  # 0: usage_rollups, i: emptied[i - 1]
    for i, month in enumerate(emptied, start=1):
        targets[(day >= np.datetime64(month.first)) & (day < np.datetime64(month.following))] = i
    starts = np.flatnonzero(np.diff(targets, prepend=-1))  # where each run of one target begins
    for begin, end in zip(starts, list(starts[1:]) + [rows.num_rows]):
        month = emptied[targets[begin] - 1] if targets[begin] else None
        copy_arrow(conn, month.partition if month else "usage_rollups", rows.slice(begin, end - begin),
                   freeze=month is not None)


def add_meter_columns(conn, meters: MeterSet, table: str = "usage_rollups") -> None:
    """One bigint column per declared meter. A meter removed from the catalog keeps its column, so
    past months stay as they were rolled up. Only a missing column is added: ALTER TABLE locks the
    table against every reader until the transaction ends, even when there is nothing to add."""
    present = {r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (table,))}
    for column in (c for c in meters.columns if c not in present):
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} bigint NOT NULL DEFAULT 0")
                     .format(sql.Identifier(table), sql.Identifier(column)))


def billing_timezones(db_url: str, start: date, end: date) -> dict[str, str]:
    """Org -> timezone for orgs whose contracts around [start, end) bill in a zone other than UTC
    (the latest contract's zone when an org has several)."""
    with transaction(db_url) as conn:
        rows = conn.execute(
            """SELECT DISTINCT ON (org_id) org_id, timezone FROM contracts_in_force
               WHERE timezone NOT IN ('UTC', 'Etc/UTC')
                 AND start_at < %s::date + 2 AND (covers_until IS NULL OR covers_until > %s::date - 1)
               ORDER BY org_id, start_at DESC""", (end, start)).fetchall()
    return dict(rows)


def _before_local_midnight(store: UsageStore, meters: MeterSet, params: dict, zones: dict[str, str],
                           days: list[date], passes: int = 1) -> pa.Table:
    """For orgs billed in other timezones, the part of each UTC day's usage sent before the local
    midnight inside it: the same deliveries-minus-duplicates queries, narrowed to those rows."""
    schema = pa.schema([("day", pa.date32()), ("org_id", pa.string()), ("project_id", pa.string()),
                        ("chain", pa.string()), ("timezone", pa.string()), ("requests", pa.int64())]
                       + [(c, pa.int64()) for c in meters.additive_columns])
    if not zones:
        return schema.empty_table()
    params = {**params, **cut_parameters(zones, days)}
    before = subtract_duplicates(
        store.query_arrow(meters.deliveries_sql(sql_text("usage_rollups"), before_local_midnight=True), params),
        query_duplicates(store, meters, params, passes, before_local_midnight=True),
        meters)
    tz = pa.array([zones[o] for o in before.column("org_id").to_pylist()], pa.string())
    return before.append_column("timezone", tz).select(schema.names).cast(schema)


def rolled_up_days(conn, start: date, end: date) -> set[date]:
    rows = conn.execute("SELECT day FROM usage_rollup_days WHERE day >= %s AND day < %s", (start, end))
    return {r[0] for r in rows}


__all__ = ["roll_up_usage", "RollupSummary", "DayTotals", "rolled_up_days"]
