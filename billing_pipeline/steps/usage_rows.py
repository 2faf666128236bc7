"""The rows a usage rollup produces and the summaries it returns (ClickHouse and OpenMeter alike)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pyarrow as pa

from ..stores.meter_sql import MeterSet

# How an operator tells a rollup that days without usage are real, wherever it runs.
EMPTY_DAYS_HINT = ("run with allow_empty_days: true (in the UI, usage_rollups' run config; from the command line, "
                   "billing close or billing dispute with --allow-empty-days)")

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
