"""usage_rollups from OpenMeter instead of ClickHouse: the same rollup rows, written the same way.

OpenMeter subjects are orgs; every meter is queried per day (UTC windows) grouped by project_id
and chain. OpenMeter deduplicates events when it ingests them, so raw_rows equals requests and
no duplicates are reported; rows without a project or on an unknown chain are quarantined. A
value that is negative or not a whole number stops the rollup, naming the meter and the row.
Usage is attributed to UTC days (no split at customers' local midnights from this source).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone

import pyarrow as pa

from ..domain.chains import known_chains
from ..errors import BillingError, MissingDataError
from ..stores.meter_sql import MeterSet
from ..stores.openmeter import OpenMeterClient
from .usage_rows import EMPTY_DAYS_HINT, QUARANTINE_COLUMNS, CollectedUsage, DayTotals, RollupSummary, rollup_schema
from .usage_tables import write_rollups

GROUP_BY = ["project_id", "chain"]


class NegativeUsageError(BillingError):
    pass


def _whole(value, where: str) -> int:
    if value < 0:
        raise NegativeUsageError(f"OpenMeter reported negative usage {value} for {where}")
    if value != value.to_integral_value():
        raise BillingError(f"OpenMeter reported a fractional value {value} for {where}; meters must count units")
    return int(value)


def collect_from_openmeter(client: OpenMeterClient, meters: MeterSet, start: datetime, end: datetime,
                           allow_empty_days: bool = False) -> CollectedUsage:
    chains = known_chains()
    values: dict[tuple, dict[str, int]] = defaultdict(dict)  # (day, org, project, chain) -> meter -> value
    for meter in meters.meters:
        for row in client.query(meter.slug, start, end, GROUP_BY):
            day = row.window_start.astimezone(timezone.utc).date()
            if row.window_end - row.window_start != timedelta(days=1):
                raise BillingError(f"OpenMeter meter {meter.slug!r}: window {row.window_start}..{row.window_end} "
                                   "is not one UTC day")
            key = (day, row.subject or "", row.group_by.get("project_id") or "", row.group_by.get("chain") or "")
            values[key][meter.slug] = _whole(row.value, f"meter {meter.slug!r}, day {day}, org {key[1]!r}, "
                                                         f"project {key[2]!r}, chain {key[3]!r}")
    billable, quarantined = [], []
    for (day, org, project, chain), by_meter in sorted(values.items()):
        requests = by_meter.get("requests", 0)
        if not org or not project or chain not in chains:
            reason = "missing_org_id" if not org else "missing_project_id" if not project else "unknown_chain"
            quarantined.append({"day": day, "reason": reason, "org_id": org, "project_id": project, "chain": chain,
                                "raw_rows": requests})
        elif requests:
            ok = by_meter.get("successful_requests", requests)
            billable.append({"day": day, "org_id": org, "project_id": project, "chain": chain, "requests": requests,
                             "successful_requests": ok, "error_requests": requests - ok,
                             "bytes_out": by_meter.get("egress_bytes", 0),
                             **{m.column: by_meter.get(m.slug, 0) for m in meters.meters}})
    schema = rollup_schema(meters)
    rollups = pa.Table.from_pylist(billable, schema=schema)
    days = [start.date() + timedelta(days=i) for i in range((end - start).days)]
    totals = _day_totals(days, billable, quarantined)
    empty = [t.day for t in totals if t.raw_rows == 0]
    if empty and not allow_empty_days:
        raise MissingDataError(f"OpenMeter has no usage for {len(empty)} day(s): "
                               f"{', '.join(d.isoformat() for d in empty[:10])} (usage_rollups partition(s) "
                               f"{empty[0].isoformat()}{'' if len(empty) == 1 else ' ...'}); was ingestion down? "
                               f"Reload those days, or, if they really had no traffic, {EMPTY_DAYS_HINT}")
    quarantine_schema = pa.schema([("day", pa.date32()), ("reason", pa.string()), ("org_id", pa.string()),
                                   ("project_id", pa.string()), ("chain", pa.string()), ("raw_rows", pa.int64())])
    spec = json.dumps({"url": client.url, "meters": [m.slug for m in meters.meters], "groupBy": GROUP_BY,
                       "windowSize": "DAY", "windowTimeZone": "UTC"}, sort_keys=True)
    before_schema = pa.schema([("day", pa.date32()), ("org_id", pa.string()), ("project_id", pa.string()),
                               ("chain", pa.string()), ("timezone", pa.string()), ("requests", pa.int64()),
                               ("bytes_out", pa.int64())] + [(c, pa.int64()) for c in meters.additive_columns])
    return CollectedUsage(rollups, totals, pa.Table.from_pylist(quarantined, schema=quarantine_schema)
                          .select(QUARANTINE_COLUMNS), before_schema.empty_table(), f"openmeter {client.url}",
                          hashlib.sha256(spec.encode()).hexdigest())


def _day_totals(days: list[date], billable: list[dict], quarantined: list[dict]) -> list[DayTotals]:
    requests, bytes_out, held = defaultdict(int), defaultdict(int), defaultdict(int)
    for row in billable:
        requests[row["day"]] += row["requests"]
        bytes_out[row["day"]] += row["bytes_out"]
    for row in quarantined:
        held[row["day"]] += row["raw_rows"]
    return [DayTotals(d, requests[d] + held[d], 0, held[d], requests[d], bytes_out[d]) for d in days]


def roll_up_from_openmeter(client: OpenMeterClient, db_url: str, start: datetime, end: datetime, *,
                           allow_empty_days: bool = False, run_id: str | None = None,
                           meters: MeterSet | None = None) -> RollupSummary:
    meters = meters or MeterSet.load()
    t0 = time.perf_counter()
    collected = collect_from_openmeter(client, meters, start, end, allow_empty_days)
    collected = dataclasses.replace(collected, seconds=time.perf_counter() - t0)
    return write_rollups(db_url, start, end, [collected], meters, run_id)
