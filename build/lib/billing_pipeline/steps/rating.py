"""rated_charges: a month of usage_rollups priced per contract (one monthly partition)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

import psycopg
from psycopg import sql

from ..domain.periods import Period, missing_days
from ..domain.rating import ContractTerms, RatedCharge, UsageAlert, rate_contract_month
from ..errors import BillingError, MissingDataError
from ..stores.postgres import transaction
from ..stores.meter_sql import MeterSet
from ..stores.plans import plans_from_db
from .usage import add_meter_columns, rolled_up_days

# A contract covers the usage of its org on the UTC days of [start_at, end_at).
_CONTRACT_DAYS = """
    r.day >= (c.start_at AT TIME ZONE 'UTC')::date
    AND (c.end_at IS NULL OR r.day < (c.end_at AT TIME ZONE 'UTC')::date)
"""

_ACTIVE_CONTRACTS = """
    SELECT contract_id, org_id, contract_type, currency, region, plan_id, start_at, end_at, timezone, price_fixed
    FROM contracts
    WHERE start_at < %(end)s AND (end_at IS NULL OR end_at > %(start)s)
    ORDER BY contract_id
"""


class OverlappingContractsError(BillingError):
    pass


@dataclass(frozen=True)
class RatingSummary:
    period: Period
    contracts: int
    charges: list[RatedCharge]
    alerts: list[UsageAlert]
    unrated_requests: int
    unrated_orgs: list[str]

    def totals_by_currency(self) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for c in self.charges:
            totals[c.currency] += c.amount
        return dict(sorted(totals.items()))


def load_terms(conn: psycopg.Connection, period: Period) -> list[ContractTerms]:
    """Every contract active in the period with its validated plan; a bad contract is named."""
    plans = plans_from_db(conn)
    terms = []
    for (contract_id, org_id, ctype, currency, region, plan_id, start_at, end_at, tz,
         price_fixed) in conn.execute(_ACTIVE_CONTRACTS, {"start": period.start_utc, "end": period.end_utc}):
        plan = plans.get(plan_id)
        if plan is None:
            raise BillingError(f"contract {contract_id} names unknown plan {plan_id!r}; known: {', '.join(sorted(plans))}")
        if ctype != plan.type:
            raise BillingError(f"contract {contract_id} is {ctype} but its plan {plan_id} is {plan.type}")
        try:
            terms.append(ContractTerms(contract_id, org_id, region, currency.strip(), plan, start_at, end_at, tz,
                                       Decimal(price_fixed) if price_fixed is not None else None))
        except (ValueError, KeyError) as exc:
            raise BillingError(f"contract {contract_id}: {exc}") from None
    return terms


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


def _usage(conn: psycopg.Connection, period: Period, meters: MeterSet) -> dict[str, dict[tuple[str, str], int]]:
    """Each contract's month of every additive meter per chain, summed inside PostgreSQL."""
    additive = [m for m in meters.meters if m.additive]
    add_meter_columns(conn, meters)
    sums = sql.SQL(", ").join(sql.SQL("sum(r.{})").format(sql.Identifier(m.column)) for m in additive)
    query = sql.SQL("""SELECT c.contract_id, r.chain, {sums}
                       FROM usage_rollups r JOIN contracts c ON c.org_id = r.org_id AND {days}
                       WHERE r.day >= %(start)s AND r.day < %(end)s
                       GROUP BY 1, 2""").format(sums=sums, days=sql.SQL(_CONTRACT_DAYS))
    usage: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
    for contract_id, chain, *values in conn.execute(query, {"start": period.start, "end": period.end}):
        for meter, value in zip(additive, values):
            usage[contract_id][(meter.slug, chain)] = int(value)
    return usage


def _check_priced_meters(terms: list[ContractTerms], meters: MeterSet) -> None:
    additive = {m.slug for m in meters.meters if m.additive}
    for t in terms:
        for charge in t.plan.charges:
            if charge.meter not in additive:
                raise BillingError(f"plan {t.plan.plan_id} prices meter {charge.meter!r}, which is not a declared "
                                   f"SUM or COUNT meter (daily values must add up to the month)")


def rate_month(db_url: str, period: Period, run_id: str | None = None, meters: MeterSet | None = None) -> RatingSummary:
    meters = meters or MeterSet.load()
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
        _check_priced_meters(terms, meters)
        usage = _usage(conn, period, meters)
        months = [rate_contract_month(t, usage.get(t.contract_id, {}), period) for t in terms]
        charges = [c for m in months for c in m.charges]
        alerts = [a for m in months for a in m.alerts]

        conn.execute("DELETE FROM rated_charges WHERE period_start = %s", (period.start,))
        conn.execute("DELETE FROM unrated_usage WHERE period_start = %s", (period.start,))
        conn.execute("DELETE FROM usage_alerts WHERE period_start = %s", (period.start,))
        with conn.cursor().copy(
            "COPY rated_charges (period_start, charge_id, contract_id, position, kind, chain, meter, description,"
            " quantity, unit_price, amount, currency, details, dagster_run_id) FROM STDIN"
        ) as copy:
            position: dict[str, int] = defaultdict(int)
            for c in charges:
                position[c.contract_id] += 1
                copy.write_row((period.start, c.charge_id, c.contract_id, position[c.contract_id], c.kind, c.chain,
                                c.meter, c.description, c.quantity, c.unit_price, c.amount, c.currency, json.dumps(c.details), run_id))
        with conn.cursor() as cur:
            cur.executemany("""INSERT INTO usage_alerts (period_start, contract_id, meter, level, cap, used)
                               VALUES (%s, %s, %s, %s, %s, %s)""",
                            [(period.start, a.contract_id, a.meter, a.level, a.cap, a.used) for a in alerts])
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
    return RatingSummary(period, len(terms), charges, alerts, unrated_requests, sorted({r[0] for r in unrated}))

