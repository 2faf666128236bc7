"""usage_rollups: ClickHouse requests_raw -> PostgreSQL usage_rollups, one UTC day per partition."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import MissingDataError
from ..stores.clickhouse import UsageStore, sql_sha256, sql_text
from ..stores.postgres import transaction
from .copy import copy_arrow

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
COUNTERS = ["requests", "successful_requests", "error_requests", "bytes_out"]


class RollupConsistencyError(RuntimeError):
    pass


def subtract_duplicates(deliveries: pa.Table, duplicates: pa.Table) -> pa.Table:
    """Billable rollups = every delivery minus the repeated ones, per key, in the deliveries' order.

    Vectorised in Arrow: a hash join against the few duplicated keys, then the original order is
    restored by an integer sort (ClickHouse already returns the deliveries sorted by key, which is
    the order PostgreSQL's primary key appends fastest). Keys left with no request are dropped: all
    their deliveries were copies of requests counted on another key or day.
    """
    deliveries = deliveries.select(ROLLUP_SCHEMA.names).cast(ROLLUP_SCHEMA)
    duplicates = duplicates.select(ROLLUP_SCHEMA.names).cast(ROLLUP_SCHEMA)
    if not duplicates.num_rows:
        return deliveries
    numbered = deliveries.append_column("_row", pa.array(range(deliveries.num_rows), pa.int64()))
    dup = duplicates.rename_columns(KEYS + [f"dup_{c}" for c in COUNTERS])
    joined = numbered.join(dup, keys=KEYS, join_type="left outer")
    joined = joined.take(pc.sort_indices(joined.column("_row")))
    columns = [joined.column(k) for k in KEYS] + [
        pc.subtract(joined.column(c), pc.fill_null(joined.column(f"dup_{c}"), 0)) for c in COUNTERS]
    result = pa.Table.from_arrays(columns, schema=ROLLUP_SCHEMA)
    result = result.filter(pc.greater(result.column("requests"), 0))
    expected = pc.sum(deliveries.column("requests")).as_py() - pc.sum(duplicates.column("requests")).as_py()
    if joined.num_rows != deliveries.num_rows or pc.sum(result.column("requests")).as_py() != expected:
        raise RollupConsistencyError(
            "duplicate copies do not match the delivered keys; did requests_raw change during the rollup? re-run it")
    return result


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days)]


def roll_up_usage(store: UsageStore, db_url: str, start: datetime, end: datetime, *,
                  dedup_lookback_hours: int = 24, allow_empty_days: bool = False,
                  run_id: str | None = None) -> RollupSummary:
    """Aggregate [start, end) inside ClickHouse and replace those days in PostgreSQL atomically."""
    t0 = time.perf_counter()
    params = {"window_start": start, "window_end": end, "dedup_lookback_hours": dedup_lookback_hours}
    totals = store.query_arrow(sql_text("usage_source_totals"), params).to_pylist()
    by_day = {row["day"]: row for row in totals}
    expected = _days(start.date(), end.date())
    missing = [d for d in expected if d not in by_day]
    if missing and not allow_empty_days:
        shown = ", ".join(d.isoformat() for d in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise MissingDataError(
            f"requests_raw has no rows for {len(missing)} day(s): {shown} (usage_rollups partition(s) "
            f"{missing[0].isoformat()}{'' if len(missing) == 1 else ' ...'}); was ingestion down? Reload those days, "
            "or run with allow_empty_days: true if the days really had no traffic"
        )

    rollup_sql = sql_text("usage_rollups") + sql_text("usage_duplicates")
    deliveries = store.query_arrow(sql_text("usage_rollups"), params)
    duplicates = store.query_arrow(sql_text("usage_duplicates"), params)
    rollups = subtract_duplicates(deliveries, duplicates)

    per_day = rollups.group_by("day").aggregate([("requests", "sum"), ("bytes_out", "sum")]).to_pylist()
    counted = {r["day"]: r for r in per_day}
    day_totals = []
    for d in expected:
        raw = by_day.get(d, {"raw_rows": 0, "quarantined_rows": 0})
        requests = counted.get(d, {}).get("requests_sum", 0) or 0
        day_totals.append(DayTotals(
            day=d, raw_rows=raw["raw_rows"], quarantined_rows=raw["quarantined_rows"],
            duplicate_rows=raw["raw_rows"] - raw["quarantined_rows"] - requests,
            requests=requests, bytes_out=counted.get(d, {}).get("bytes_out_sum", 0) or 0,
        ))
    query_sha = sql_sha256(rollup_sql)
    t1 = time.perf_counter()

    with transaction(db_url) as conn:
        conn.execute("DELETE FROM usage_rollups WHERE day >= %s AND day < %s", (start.date(), end.date()))
        conn.execute("DELETE FROM usage_rollup_days WHERE day >= %s AND day < %s", (start.date(), end.date()))
        copy_arrow(conn, "usage_rollups", rollups)
        with conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO usage_rollup_days (day, raw_rows, duplicate_rows, quarantined_rows, requests,
                       bytes_out, source_engine, source_query_sha256, dagster_run_id)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                [(t.day, t.raw_rows, t.duplicate_rows, t.quarantined_rows, t.requests, t.bytes_out,
                  store.engine, query_sha, run_id) for t in day_totals],
            )

    t2 = time.perf_counter()
    top = rollups.group_by(["org_id", "chain"]).aggregate([("requests", "sum"), ("bytes_out", "sum")])
    top = top.sort_by([("requests_sum", "descending")]).slice(0, 10)
    return RollupSummary(start.date(), end.date(), rollups.num_rows, day_totals, top, store.engine, query_sha,
                         {"clickhouse": t1 - t0, "postgres": t2 - t1})


def rolled_up_days(conn, start: date, end: date) -> set[date]:
    rows = conn.execute("SELECT day FROM usage_rollup_days WHERE day >= %s AND day < %s", (start, end))
    return {r[0] for r in rows}


__all__ = ["roll_up_usage", "RollupSummary", "DayTotals", "rolled_up_days"]
