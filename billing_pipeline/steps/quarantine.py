"""Bad raw usage made visible: a window's quarantined rows per reason, and the rows no daily
rollup will ever read because their timestamp is impossible (in the future, or before 2000).

Which rows are quarantined, and why, is one ClickHouse expression (stores/sql/
usage_quarantine_reason.sql) shared by every usage query, so the day's totals add up:
raw rows = billed requests + duplicate copies + quarantined rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from ..stores.clickhouse import UsageStore, sql_text
from ..stores.postgres import connect

# Gateways' clocks drift; a row up to an hour ahead is served traffic, not a broken timestamp.
FUTURE_TOLERANCE = timedelta(hours=1)
# No request of ours predates it; a row without a timestamp is stored at 1970-01-01.
EARLIEST_PLAUSIBLE = datetime(2000, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class OutOfRangeRows:
    reason: str  # future_timestamp or ancient_timestamp
    raw_rows: int
    earliest: datetime
    latest: datetime


def quarantined_by_reason(db_url: str, start: date, end: date) -> dict[str, int]:
    """Rows quarantined on the days of [start, end), per reason, as the rollup stored them."""
    with connect(db_url) as conn:
        return {reason: int(rows) for reason, rows in conn.execute(
            """SELECT reason, sum(raw_rows) FROM quarantined_usage WHERE day >= %s AND day < %s
               GROUP BY reason ORDER BY reason""", (start, end))}


def rows_out_of_range(store: UsageStore, now: datetime | None = None) -> list[OutOfRangeRows]:
    """Rows anywhere in requests_raw stamped after now (plus the tolerance) or before 2000."""
    now = now or datetime.now(timezone.utc)
    found = store.query_arrow(sql_text("usage_out_of_range"), {
        "not_before": EARLIEST_PLAUSIBLE, "not_after": now + FUTURE_TOLERANCE}).to_pylist()
    return [OutOfRangeRows(r["reason"], r["raw_rows"], r["earliest"], r["latest"]) for r in found]
