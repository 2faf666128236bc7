"""Evidence for an enterprise dispute: the contract's raw requests (timestamps, source addresses)
for a date range, exported from ClickHouse, signed like the audit snapshots, stored locked in S3.
Each row says whether it is billed: the billed ones are exactly what the rollups bill (deduplicated
the same way), the others were served but quarantined (an unknown chain, a malformed row)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..domain.audit import build_evidence
from ..domain.chains import known_chains
from ..errors import BillingError
from ..stores.clickhouse import UsageStore, sql_text
from ..stores.postgres import connect

REQUESTS, DAILY = "requests.csv", "daily_totals.csv"


@dataclass(frozen=True)
class Evidence:
    contract_id: str
    org_id: str
    start: date
    end: date  # exclusive
    requests: int  # billed, as the rollups bill them
    unbilled_rows: int  # served but not billable (quarantined by the rollups)
    objects: dict[str, bytes]

    @property
    def prefix(self) -> str:
        return f"evidence/{self.contract_id}/{self.start.isoformat()}_{self.end.isoformat()}"


def _csv(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pacsv.write_csv(table, out)
    return out.getvalue()


def export_evidence(store: UsageStore, db_url: str, contract_id: str, start: date, end: date,
                    key: Ed25519PrivateKey) -> Evidence:
    """``end`` is exclusive; both are days of the contract's calendar (its timezone: the days its
    invoices bill, so a month's evidence adds up to the month's invoice). Only the time the contract
    was in force is exported."""
    if end <= start:
        raise BillingError(f"evidence for {contract_id}: the range {start}..{end} is empty (the end is exclusive)")
    with connect(db_url) as conn:
        # covers_until: an auto-renewing contract keeps covering (and billing) past its term's end_at
        row = conn.execute("SELECT org_id, start_at, covers_until, timezone FROM contracts_in_force "
                           "WHERE contract_id = %s", (contract_id,)).fetchone()
    if row is None:
        raise BillingError(f"evidence: no contract {contract_id!r}")
    org_id, contract_start, contract_end, tz = row
    zone = ZoneInfo(tz)

    def midnight(day: date) -> datetime:
        return datetime.combine(day, time(), zone).astimezone(timezone.utc)

    # The contract bills whole days of its calendar, from the day it starts to the day it ends
    # (domain/terms.active_days): cut at its start_at and end_at instants, the evidence of a
    # contract signed at 01:00 local left out the hour it billed before, and one ended at 01:00
    # local counted the hour it did not bill.
    lower = max(midnight(start), midnight(contract_start.astimezone(zone).date()))
    upper = midnight(end)
    upper = min(upper, midnight(contract_end.astimezone(zone).date())) if contract_end else upper
    table = store.query_arrow(sql_text("evidence_requests"), {"org_id": org_id, "start": lower, "end": upper,
                                                              "lookback_start": lower - timedelta(hours=24),
                                                              "known_chains": list(known_chains())})
    billed = table.column("billed").cast(pa.int64()) if table.num_rows else pa.array([], pa.int64())
    local = table.column("timestamp").cast(pa.timestamp("ms", tz=tz))  # the contract's calendar days
    days = pc.strftime(local, format="%Y-%m-%d") if table.num_rows else pa.array([], pa.string())
    # per day: the requests the rollups bill, and the rows served but not billed (quarantined)
    daily = pa.table({"day": days, "requests": billed, "unbilled_rows": pc.subtract(1, billed)}) \
        .group_by("day").aggregate([("requests", "sum"), ("unbilled_rows", "sum")]) \
        .rename_columns(["day", "requests", "unbilled_rows"]).sort_by("day")
    requests = pc.sum(billed).as_py() or 0
    subject = {"contract_id": contract_id, "org_id": org_id, "from": lower.isoformat(), "to": upper.isoformat(),
               "timezone": tz, "requests": requests, "unbilled_rows": table.num_rows - requests}
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    objects = build_evidence(subject, created, {REQUESTS: _csv(table), DAILY: _csv(daily)}, key)
    return Evidence(contract_id, org_id, start, end, requests, table.num_rows - requests, objects)
