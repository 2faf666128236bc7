"""Deduplication for usage_rollups: the copies of requests delivered more than once.

The rollup bills every delivery (usage_rollups.sql) minus the copies of requests already counted
(usage_duplicates.sql), per (day, org, project, chain). This module finds the copies, in passes
when a window holds more request keys than the in-process engine should hash at once, and
subtracts them from the deliveries in Arrow."""

from __future__ import annotations

import math
import uuid
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from ..stores.clickhouse import UsageStore, sql_expression, sql_text
from ..stores.meter_sql import MeterSet
from .usage_rows import COUNTERS, KEYS, rollup_schema


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
