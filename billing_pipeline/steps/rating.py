"""rated_charges: a month of usage_rollups priced per contract (one monthly partition)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

import psycopg

from ..domain.periods import Period, missing_days
from ..domain.pricing import ChainUsage, ContractTerms, RatedCharge, rate_contract
from ..errors import BillingError, MissingDataError
from ..stores.postgres import transaction
from .usage import rolled_up_days

# A contract covers the usage of its org on the UTC days of [start_at, end_at).
_CONTRACT_DAYS = """
    r.day >= (c.start_at AT TIME ZONE 'UTC')::date
    AND (c.end_at IS NULL OR r.day < (c.end_at AT TIME ZONE 'UTC')::date)
"""

_ACTIVE_CONTRACTS = """
    SELECT c.contract_id, c.org_id, c.contract_type, c.currency, c.region, c.plan_id, p.name,
           p.rate_per_unit, p.included_units, COALESCE(c.price_fixed, p.base_price), p.currency
    FROM contracts c JOIN plans p USING (plan_id)
    WHERE c.start_at < %(end)s AND (c.end_at IS NULL OR c.end_at > %(start)s)
"""


class OverlappingContractsError(BillingError):
    pass


@dataclass(frozen=True)
class RatingSummary:
    period: Period
    contracts: int
    charges: list[RatedCharge]
    unrated_requests: int
    unrated_orgs: list[str]

    def totals_by_currency(self) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for c in self.charges:
            totals[c.currency] += c.amount
        return dict(sorted(totals.items()))


def load_terms(conn: psycopg.Connection, period: Period) -> list[ContractTerms]:
    rows = conn.execute(_ACTIVE_CONTRACTS + " ORDER BY c.contract_id",
                        {"start": period.start_utc, "end": period.end_utc}).fetchall()
    for r in rows:
        if r[3] != r[10]:
            raise BillingError(
                f"contract {r[0]} bills in {r[3]} but its plan {r[5]} is priced in {r[10]}; "
                "give the contract a plan in its own currency")
    return [ContractTerms(r[0], r[1], r[2], r[3], r[4], r[5], r[6], Decimal(r[7]), int(r[8]), Decimal(r[9]))
            for r in rows]


def _check_no_overlaps(conn: psycopg.Connection, period: Period) -> None:
    rows = conn.execute(
        """SELECT a.org_id, a.contract_id, b.contract_id FROM contracts a JOIN contracts b
               ON a.org_id = b.org_id AND a.contract_id < b.contract_id
              AND a.start_at < COALESCE(b.end_at, 'infinity') AND b.start_at < COALESCE(a.end_at, 'infinity')
           WHERE a.start_at < %(end)s AND COALESCE(a.end_at, 'infinity') > %(start)s
           ORDER BY 1, 2, 3""",
        {"start": period.start_utc, "end": period.end_utc}).fetchall()
    if rows:
        org, a, b = rows[0]
        raise OverlappingContractsError(
            f"org {org}: contracts {a} and {b} overlap in {period.label}; the same usage would be billed twice. "
            "End one contract before the other starts."
        )


def rate_month(db_url: str, period: Period, run_id: str | None = None) -> RatingSummary:
    with transaction(db_url) as conn:
        conn.execute("SET LOCAL work_mem = '128MB'")  # a month of rollups aggregates in memory
        missing = missing_days(period.days(), rolled_up_days(conn, period.start, period.end))
        if missing:
            raise MissingDataError(
                f"rated_charges {period.start.isoformat()} needs every day of {period.label} in usage_rollups; "
                f"missing partition(s): {', '.join(d.isoformat() for d in missing)}"
            )
        _check_no_overlaps(conn, period)
        terms = load_terms(conn, period)
        usage_rows = conn.execute(
            f"""SELECT c.contract_id, r.chain, sum(r.requests), sum(r.successful_requests), sum(r.bytes_out)
                FROM usage_rollups r JOIN contracts c ON c.org_id = r.org_id AND {_CONTRACT_DAYS}
                WHERE r.day >= %(start)s AND r.day < %(end)s
                GROUP BY 1, 2""",
            {"start": period.start, "end": period.end}).fetchall()
        usage: dict[str, list[ChainUsage]] = defaultdict(list)
        for contract_id, chain, requests, ok, bytes_out in usage_rows:
            usage[contract_id].append(ChainUsage(chain, int(requests), int(ok), int(bytes_out)))

        charges = [c for t in terms for c in rate_contract(t, usage.get(t.contract_id, []), period)]

        conn.execute("DELETE FROM rated_charges WHERE period_start = %s", (period.start,))
        conn.execute("DELETE FROM unrated_usage WHERE period_start = %s", (period.start,))
        with conn.cursor().copy(
            "COPY rated_charges (period_start, charge_id, contract_id, position, kind, chain, meter, description,"
            " quantity, unit_price, amount, currency, details, dagster_run_id) FROM STDIN"
        ) as copy:
            position: dict[str, int] = defaultdict(int)
            for c in charges:
                position[c.contract_id] += 1
                copy.write_row((period.start, c.charge_id, c.contract_id, position[c.contract_id], c.kind, c.chain,
                                c.meter, c.description, c.quantity, c.unit_price, c.amount, c.currency,
                                json.dumps(c.details), run_id))
        # Usage no contract covers is kept and counted, never dropped.
        unrated = conn.execute(
            f"""INSERT INTO unrated_usage (period_start, org_id, chain, requests, bytes_out, reason)
                SELECT %(start)s, r.org_id, r.chain, sum(r.requests), sum(r.bytes_out), 'no contract covers these days'
                FROM usage_rollups r
                WHERE r.day >= %(start)s AND r.day < %(end)s
                  AND NOT EXISTS (SELECT 1 FROM contracts c WHERE c.org_id = r.org_id AND {_CONTRACT_DAYS})
                GROUP BY r.org_id, r.chain
                RETURNING org_id, requests""",
            {"start": period.start, "end": period.end}).fetchall()
        unrated_requests = sum(r[1] for r in unrated)
        conn.execute(
            """INSERT INTO rating_runs (period_start, contracts, charges, unrated_requests, dagster_run_id)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (period_start) DO UPDATE SET contracts = EXCLUDED.contracts, charges = EXCLUDED.charges,
                   unrated_requests = EXCLUDED.unrated_requests, dagster_run_id = EXCLUDED.dagster_run_id,
                   rated_at = EXCLUDED.rated_at""",
            (period.start, len(terms), len(charges), unrated_requests, run_id))
    return RatingSummary(period, len(terms), charges, unrated_requests, sorted({r[0] for r in unrated}))
