"""usage_rollups: ClickHouse requests_raw -> PostgreSQL usage_rollups, one UTC day per partition.

This module reads a window from ClickHouse and hands it on; its helpers are usage_chunks (how the
window streams), usage_copies (deduplication), usage_tables (the PostgreSQL side) and usage_rows
(the rows and summaries)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import date, datetime, timedelta

import pyarrow as pa

from ..domain.chains import known_chains
from ..domain.local_days import cut_parameters
from ..errors import MissingDataError
from ..stores.clickhouse import UsageStore, sql_sha256, sql_text
from ..stores.meter_sql import MeterSet
from ..stores.postgres import transaction
from .usage_chunks import days_between, give_back_memory, plan_chunks, prefetched, window_is_oversized
from .usage_copies import copy_key_passes, duplicates_sql, query_duplicates, subtract_duplicates
from .usage_rows import EMPTY_DAYS_HINT, QUARANTINE_COLUMNS, CollectedUsage, DayTotals, RollupSummary
from .usage_tables import write_rollups

log = logging.getLogger(__name__)


def _check_no_missing_days(expected: list[date], present: set[date]) -> None:
    missing = [d for d in expected if d not in present]
    if missing:
        shown = ", ".join(d.isoformat() for d in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise MissingDataError(
            f"requests_raw has no rows for {len(missing)} day(s): {shown} (usage_rollups partition(s) "
            f"{missing[0].isoformat()}{'' if len(missing) == 1 else ' ...'}); was ingestion down? Reload those days, "
            f"or, if they really had no traffic, {EMPTY_DAYS_HINT}"
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
    expected = days_between(start.date(), end.date())
    source = source_totals(store, start, end)
    if not allow_empty_days:
        _check_no_missing_days(expected, {row["day"] for row in source})
    zones = billing_timezones(db_url, start.date(), end.date())
    source_by_day = {row["day"]: row for row in source}

    def collect(window: tuple[datetime, datetime], previous_released: threading.Event) -> CollectedUsage:
        days = days_between(window[0].date(), window[1].date())
        window_source = [source_by_day.get(d, {"day": d, "raw_rows": 0, "quarantined_rows": 0}) for d in days]
        oversized = window_is_oversized(window_source)
        return collect_usage(store, meters, {**params, "window_start": window[0], "window_end": window[1]}, zones,
                             window_source, previous_released if oversized else None)

    return write_rollups(db_url, start, end, prefetched(collect, plan_chunks(start, end, source)), meters, run_id)


def source_totals(store: UsageStore, start: datetime, end: datetime) -> list[dict]:
    """Per UTC day of [start, end): raw rows, quarantined rows and about how many rollup rows."""
    return store.query_arrow(sql_text("usage_source_totals"), {
        "window_start": start, "window_end": end, "known_chains": list(known_chains())}).to_pylist()


def collect_usage(store: UsageStore, meters: MeterSet, params: dict, zones: dict[str, str],
                  source: list[dict], previous_released: threading.Event | None = None) -> CollectedUsage:
    """One window's rollups, quarantine and local-midnight split, read from ClickHouse. The big
    queries wait for ``previous_released`` if given: the previous window written and let go of."""
    t0 = time.perf_counter()
    days = days_between(params["window_start"].date(), params["window_end"].date())
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


def billing_timezones(db_url: str, start: date, end: date) -> dict[str, str]:
    """Org -> timezone for orgs whose contracts bill in a zone other than UTC in any month whose
    rating reads a day of [start, end) (the latest contract's zone when an org has several): the
    zones rating finds for those months (rating._USAGE_ON_BILLED_DAYS), whatever window this run
    covers. Taken around the window alone, a day rolled up by itself lost the split of an org whose
    contract starts later that month (1,160 requests counted unrated), unlike the month's close."""
    start = (start - timedelta(days=1)).replace(day=1)  # the month that reads the window's first day
    end = (end.replace(day=1) + timedelta(days=32)).replace(day=1)  # the end of the month reading the last
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
                        ("chain", pa.string()), ("timezone", pa.string()), ("requests", pa.int64()),
                        ("bytes_out", pa.int64())]
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


__all__ = ["roll_up_usage", "source_totals", "collect_usage", "RollupSummary", "DayTotals"]
