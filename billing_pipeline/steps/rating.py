"""rated_charges: a month of usage_rollups priced per contract (one monthly partition)."""

from __future__ import annotations

import heapq
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Iterator
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

from ..domain.periods import BILLING_START, Period, missing_days
from ..domain.adjustments import Discount
from ..domain.amendments import Amendment, attach_usage, split_month
from ..domain.local_days import to_local_days
from ..domain.plans import Plan
from ..domain.rating import rate_contract_month, rate_month_parts
from ..domain.terms import ContractMonth, ContractTerms, RatedCharge, UsageAlert
from ..errors import BillingError, MissingDataError
from ..stores.postgres import connect, lock_partitions, transaction
from ..stores.meter_sql import MeterSet
from ..stores.plans import plans_for_month, plans_from_db
from .usage_tables import add_meter_columns, analyze_rollups, rolled_up_days

# A contract covers the usage of its org on the UTC days of [start_at, covers_until): see the
# contracts_in_force view (auto-renewing contracts do not end at the end of their term).
_CONTRACT_DAYS = """
    r.day >= (c.start_at AT TIME ZONE 'UTC')::date
    AND (c.covers_until IS NULL OR r.day < (c.covers_until AT TIME ZONE 'UTC')::date)
"""

# The month's usage on the days it is billed on: an org billed in another timezone (its latest
# contract's, as the rollup split its days: steps/usage.billing_timezones) on its own calendar days,
# each UTC day's rollup cut at the local midnight inside it (domain/local_days.py: the part before
# the cut is the local day before the cut's date); every other org on UTC days. Rows: (UTC day,
# org, project, chain, local day, requests, bytes). Counted on UTC days, a zoned contract starting
# at 01:00 local on the 16th left the 15th's UTC hours before the local midnight neither billed nor
# unrated, and counted its first local hours (still the 15th in UTC) as both.
_USAGE_ON_BILLED_DAYS = """
    WITH zone AS (
        SELECT DISTINCT ON (org_id) org_id, timezone FROM contracts_in_force
        WHERE timezone NOT IN ('UTC', 'Etc/UTC')
          AND start_at < %(end)s::date + 2 AND (covers_until IS NULL OR covers_until > %(start)s::date - 1)
        ORDER BY org_id, start_at DESC)
    SELECT r.day, r.org_id, r.project_id, r.chain, r.day AS local_day, r.requests, r.bytes_out
    FROM usage_rollups r
    WHERE r.day >= %(start)s AND r.day < %(end)s AND NOT EXISTS (SELECT 1 FROM zone z WHERE z.org_id = r.org_id)
    UNION ALL
    SELECT r.day, r.org_id, r.project_id, r.chain, part.local_day, part.requests, part.bytes_out
    FROM usage_rollups r JOIN zone z ON z.org_id = r.org_id
    LEFT JOIN usage_before_local_midnight b
           ON (b.day, b.org_id, b.project_id, b.chain) = (r.day, r.org_id, r.project_id, r.chain)
    CROSS JOIN LATERAL (SELECT ((((r.day + 1)::timestamp - interval '1 microsecond') AT TIME ZONE 'UTC')
                                AT TIME ZONE z.timezone)::date AS cut_day) cut
    CROSS JOIN LATERAL (VALUES (cut.cut_day, r.requests - coalesce(b.requests, 0),
                                r.bytes_out - coalesce(b.bytes_out, 0)),
                               (cut.cut_day - 1, coalesce(b.requests, 0), coalesce(b.bytes_out, 0)))
               AS part (local_day, requests, bytes_out)
    WHERE r.day >= %(start)s::date - 1 AND r.day < %(end)s::date + 1
      AND part.local_day >= %(start)s AND part.local_day < %(end)s AND part.requests > 0
"""

# A contract covers the usage of its org on the days of [start_at, covers_until) in its timezone,
# the days it bills (domain/terms.active_days); ``p`` is a row of _USAGE_ON_BILLED_DAYS.
_COVERS_BILLED_DAY = """
    p.local_day >= (c.start_at AT TIME ZONE c.timezone)::date
    AND (c.covers_until IS NULL OR p.local_day < (c.covers_until AT TIME ZONE c.timezone)::date)
"""

_ACTIVE_CONTRACTS = """
    SELECT contract_id, org_id, contract_type, currency, region, plan_id, start_at, covers_until, timezone,
           price_fixed, minimum_commitment, billing_cycle
    FROM contracts_in_force
    WHERE start_at < %(end)s AND (covers_until IS NULL OR covers_until > %(start)s)
    ORDER BY contract_id
"""


class OverlappingContractsError(BillingError):
    pass


@dataclass
class RatingSummary:
    """What a month's rating wrote, kept small whatever the number of contracts: the charges
    themselves stream into rated_charges and are not held."""

    period: Period
    contracts: int = 0
    charge_count: int = 0
    totals: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))  # unrounded, per currency
    largest: list[RatedCharge] = field(default_factory=list)  # the 10 largest charges
    plans_kept_as_issued: list[str] = field(default_factory=list)  # changed in the catalog since the month was issued
    alerts: list[UsageAlert] = field(default_factory=list)
    unrated_requests: int = 0
    unrated_orgs: list[str] = field(default_factory=list)

    def add(self, charges: list[RatedCharge]) -> None:
        self.charge_count += len(charges)
        for c in charges:
            self.totals[c.currency] += c.amount
        self.largest = heapq.nlargest(10, self.largest + charges, key=lambda c: c.amount)

    def totals_by_currency(self) -> dict[str, Decimal]:
        return dict(sorted(self.totals.items()))


def load_terms(conn: psycopg.Connection, period: Period, plans: dict[str, Plan] | None = None) -> list[ContractTerms]:
    """Every contract active in the period with its validated plan; a bad contract is named."""
    plans = plans if plans is not None else plans_from_db(conn)
    terms = []
    for (contract_id, org_id, ctype, currency, region, plan_id, start_at, end_at, tz, price_fixed,
         commitment, cycle) in conn.execute(_ACTIVE_CONTRACTS, {"start": period.start_utc, "end": period.end_utc}):
        plan = plans.get(plan_id)
        if plan is None:
            raise BillingError(f"contract {contract_id} names unknown plan {plan_id!r}; known: {', '.join(sorted(plans))}")
        if ctype != plan.type:
            raise BillingError(f"contract {contract_id} is {ctype} but its plan {plan_id} is {plan.type}")
        if cycle != plan.billing_cycle:  # the plan bills; a contract saying otherwise misleads whoever reads it
            raise BillingError(f"contract {contract_id} says billing_cycle {cycle} but its plan {plan_id} is billed "
                               f"{plan.billing_cycle}; make them agree")
        try:
            terms.append(ContractTerms(contract_id, org_id, region, currency.strip(), plan, start_at, end_at, tz,
                                       _decimal(price_fixed), _decimal(commitment)))
        except (ValueError, KeyError) as exc:
            raise BillingError(f"contract {contract_id}: {exc}") from None
    return terms


def _check_no_overlaps(conn: psycopg.Connection, period: Period) -> None:
    rows = conn.execute(
        """SELECT a.org_id, a.contract_id, b.contract_id FROM contracts_in_force a JOIN contracts_in_force b
               ON a.org_id = b.org_id AND a.contract_id < b.contract_id
              AND a.start_at < COALESCE(b.covers_until, 'infinity') AND b.start_at < COALESCE(a.covers_until, 'infinity')
           WHERE a.start_at < %(end)s AND COALESCE(a.covers_until, 'infinity') > %(start)s
           ORDER BY 1, 2, 3""",
        {"start": period.start_utc, "end": period.end_utc}).fetchall()
    if rows:
        org, a, b = rows[0]
        raise OverlappingContractsError(
            f"org {org}: contracts {a} and {b} overlap in {period.label}; the same usage would be billed twice. "
            "End one contract before the other starts."
        )


def _decimal(value) -> Decimal | None:
    return Decimal(value) if value is not None else None


def _daily_usage_query(meters: MeterSet, table: str) -> sql.Composed:
    sums = sql.SQL(", ").join(sql.SQL("sum(r.{})").format(sql.Identifier(c)) for c in meters.additive_columns)
    # every day of the org: per-day usage is cut to the contract's days later, in its own timezone
    return sql.SQL("""SELECT c.contract_id, r.day, r.chain, {sums}
                      FROM {table} r JOIN contracts_in_force c ON c.org_id = r.org_id
                      WHERE r.day >= %(start)s AND r.day < %(end)s AND c.contract_id = ANY(%(only)s)
                      GROUP BY 1, 2, 3""").format(sums=sums, table=sql.Identifier(table))


def _daily_usage(conn: psycopg.Connection, period: Period, meters: MeterSet, contract_ids: list[str],
                 table: str = "usage_rollups") -> dict[str, dict[date, dict]]:
    """Every additive meter per contract, UTC day and chain, summed inside PostgreSQL, for
    ``contract_ids`` (amended or non-UTC contracts: few), from the day before the month to the day
    after it (the days a local month can reach). Returns {contract: {day: Usage}}."""
    additive = [m for m in meters.meters if m.additive]
    usage: dict[str, dict] = defaultdict(lambda: defaultdict(dict))
    params = {"start": period.start - timedelta(days=1), "end": period.end + timedelta(days=1), "only": contract_ids}
    for contract_id, day, chain, *values in conn.execute(_daily_usage_query(meters, table), params):
        for meter, value in zip(additive, values):
            usage[contract_id][day][(meter.slug, chain)] = int(value)
    return usage


# Covers every UTC day of the month %(start)s..%(end)s: _CONTRACT_DAYS holds for its first and last day.
_COVERS_THE_MONTH = """
    (c.start_at AT TIME ZONE 'UTC')::date <= %(start)s
    AND (c.covers_until IS NULL OR (c.covers_until AT TIME ZONE 'UTC')::date >= %(end)s)
"""


def _monthly_usage_query(meters: MeterSet) -> sql.Composed:
    """Month totals per contract and chain, in contract order. A contract covering the whole month
    (nearly all) gets its org's month, summed per (org, chain) before the join: hashed in memory,
    6.2 M rollup rows into 200 k groups at 10k contracts (5.0 s). Joining first and filtering each
    row by the contract's days, as the few contracts that start or end inside the month still are,
    left PostgreSQL guessing a ninth of the rows (the two range conditions) and so sorting all
    6.2 M joined rows to disk to group them (12.8-16.4 s)."""
    columns = [sql.Identifier(c) for c in meters.additive_columns]
    named = sql.SQL(", ").join(sql.SQL("sum({}) AS {}").format(c, c) for c in columns)
    summed = sql.SQL(", ").join(sql.SQL("sum(r.{})").format(c) for c in columns)
    return sql.SQL("""
        SELECT c.contract_id, NULL::date, u.chain, {picked}
        FROM (SELECT org_id, chain, {named} FROM usage_rollups
              WHERE day >= %(start)s AND day < %(end)s GROUP BY org_id, chain) u
        JOIN contracts_in_force c ON c.org_id = u.org_id AND {whole}
        UNION ALL
        SELECT c.contract_id, NULL::date, r.chain, {summed}
        FROM usage_rollups r JOIN contracts_in_force c ON c.org_id = r.org_id AND {days} AND NOT ({whole})
        WHERE r.day >= %(start)s AND r.day < %(end)s
        GROUP BY c.contract_id, r.chain
        ORDER BY 1""").format(
        picked=sql.SQL(", ").join(sql.SQL("u.{}").format(c) for c in columns), named=named, summed=summed,
        whole=sql.SQL(_COVERS_THE_MONTH), days=sql.SQL(_CONTRACT_DAYS))


def _zoned(t: ContractTerms) -> bool:
    return t.timezone not in ("UTC", "Etc/UTC")


def _days_needed(terms: list[ContractTerms], period: Period) -> list[date]:
    """UTC days the month's rating reads: the month, plus the edges of non-UTC contracts' local months."""
    needed = set(period.days())
    for t in filter(_zoned, terms):
        zone = ZoneInfo(t.timezone)
        first = datetime.combine(period.start, time(), zone).astimezone(timezone.utc)
        end = datetime.combine(period.end, time(), zone).astimezone(timezone.utc) - timedelta(milliseconds=1)
        needed |= {first.date(), end.date()}
    return sorted(d for d in needed if d >= BILLING_START)  # the first month's eve is never rolled up


def _amendments(conn: psycopg.Connection, period: Period, plans: dict[str, Plan]) -> dict[str, list[Amendment]]:
    """Each contract's amendments in force by the end of the period. An amendment may change the
    plan, not the currency or the billing cycle the contract is billed in: a yearly fee is charged
    in the month the contract year starts, so a monthly contract moved to a yearly plan in October
    would bill no fee until January. Such a change is a new contract; the amendment is refused."""
    found: dict[str, list[Amendment]] = defaultdict(list)
    for contract_id, effective_from, plan_id, price_fixed, commitment, reason, currency, cycle in conn.execute(
            """SELECT a.contract_id, a.effective_from, a.plan_id, a.price_fixed, a.minimum_commitment, a.reason,
                      c.currency, c.billing_cycle
               FROM contract_amendments a JOIN contracts c USING (contract_id)
               WHERE a.effective_from < %s ORDER BY a.contract_id, a.effective_from""",
            (period.end_utc,)):
        named = f"contract {contract_id}: amendment from {effective_from.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"
        plan = plans.get(plan_id)
        if plan is None:
            raise BillingError(f"{named} names unknown plan {plan_id!r}")
        currency = currency.strip()  # char(3)
        if plan.currency != currency:
            raise BillingError(f"{named} names plan {plan_id}, priced in {plan.currency}; the contract bills in "
                               f"{currency} (a change of currency is a new contract)")
        if plan.billing_cycle != cycle:
            raise BillingError(f"{named} names plan {plan_id}, billed {plan.billing_cycle}; the contract is billed "
                               f"{cycle} (a change of billing cycle is a new contract)")
        found[contract_id].append(Amendment(effective_from, plan, _decimal(price_fixed), _decimal(commitment), reason))
    return found


def _discounts(conn: psycopg.Connection, period: Period) -> dict[str, tuple[Discount, ...]]:
    found: dict[str, list[Discount]] = defaultdict(list)
    for row in conn.execute(
            """SELECT contract_id, discount_id, kind, value, applies_to, valid_from, valid_to, description
               FROM contract_discounts WHERE valid_from < %s AND (valid_to IS NULL OR valid_to > %s)""",
            (period.end, period.start)):
        found[row[0]].append(Discount(row[1], row[2], Decimal(row[3]), row[4], row[5], row[6], row[7]))
    return {k: tuple(v) for k, v in found.items()}


def _monthly_usage(conn: psycopg.Connection, period: Period, meters: MeterSet) -> Iterator[tuple[str, dict]]:
    """(contract, {(meter, chain): month total}) one contract at a time, streamed 20,000 rows at a
    time: the month's totals of 100k contracts never sit in memory together. Not a server-side
    cursor: PostgreSQL plans no parallel query for one, and the month's aggregation then ran on one
    core (4.6 s at 10k contracts, 3.5 s streamed; rating 15.2 s -> 14.0 s, three runs each)."""
    additive = [m for m in meters.meters if m.additive]
    with conn.cursor() as cur:
        current, usage = None, {}
        for contract_id, _day, chain, *values in cur.stream(_monthly_usage_query(meters),
                                                             {"start": period.start, "end": period.end}, size=20_000):
            if contract_id != current:
                if current is not None:
                    yield current, usage
                current, usage = contract_id, {}
            for meter, value in zip(additive, values):
                usage[(meter.slug, chain)] = int(value)
        if current is not None:
            yield current, usage


def _rated_months(conn: psycopg.Connection, period: Period, meters: MeterSet, terms: list[ContractTerms],
                  plans: dict[str, Plan]) -> Iterator[ContractMonth]:
    """Each contract's month, rated as its usage streams in. Amended and non-UTC contracts (few)
    are rated from per-day usage; every other one from its month totals."""
    amendments = _amendments(conn, period, plans)
    discounts = _discounts(conn, period)
    zoned = sorted(t.contract_id for t in terms if _zoned(t))
    by_day = {t.contract_id for t in terms if t.contract_id in amendments} | set(zoned)
    daily = _daily_usage(conn, period, meters, sorted(by_day)) if by_day else {}
    before = _daily_usage(conn, period, meters, zoned, "usage_before_local_midnight") if zoned else {}
    pending = {t.contract_id: t for t in terms}
    for contract_id, usage in _monthly_usage(conn, period, meters):
        if contract_id in by_day or contract_id not in pending:
            continue
        yield rate_contract_month(pending.pop(contract_id), usage, period, discounts.get(contract_id, ()))
    for contract_id, t in sorted(pending.items()):  # per-day contracts, and those without usage
        if contract_id in by_day:
            days = daily.get(contract_id, {})
            if _zoned(t):
                days = to_local_days(days, before.get(contract_id, {}), t.timezone)
            parts = attach_usage(split_month(t, amendments.get(contract_id, []), period), days)
            yield rate_month_parts(parts, period, discounts.get(contract_id, ()))
        else:
            yield rate_contract_month(t, {}, period, discounts.get(contract_id, ()))


_COPY_CHARGES = ("COPY rated_charges (period_start, charge_id, contract_id, position, kind, chain, meter, description,"
                 " quantity, unit_price, amount, currency, details, plan_id, dagster_run_id) FROM STDIN")


def _write_charges(copy: psycopg.Copy, period: Period, month: ContractMonth, run_id: str | None) -> None:
    for position, c in enumerate(month.charges, start=1):
        copy.write_row((period.start, c.charge_id, c.contract_id, position, c.kind, c.chain, c.meter,
                        c.description, c.quantity, c.unit_price, c.amount, c.currency, json.dumps(c.details), c.plan_id,
                        run_id))


def _check_priced_meters(terms: list[ContractTerms], meters: MeterSet) -> None:
    additive = {m.slug for m in meters.meters if m.additive}
    for t in terms:
        for charge in t.plan.charges:
            if charge.meter not in additive:
                raise BillingError(f"plan {t.plan.plan_id} prices meter {charge.meter!r}, which is not a declared "
                                   f"SUM or COUNT meter (daily values must add up to the month)")


def rate_month(db_url: str, period: Period, run_id: str | None = None, meters: MeterSet | None = None) -> RatingSummary:
    meters = meters or MeterSet.load()
    with transaction(db_url) as conn:  # committed first: the usage reader below must not wait on it
        add_meter_columns(conn, meters)
        add_meter_columns(conn, meters, "usage_before_local_midnight")
        analyze_rollups(conn, period.start - timedelta(days=1), period.end + timedelta(days=1))
    # Usage is read on a second connection while this one COPYs the charges in one stream:
    # PostgreSQL stores each charge while Python prices the next contracts (a COPY per 2,000
    # contracts left it idle during the pricing, then Python idle for 3.1 s of the COPYs' ends).
    # The reader reads only committed tables this transaction does not write.
    with transaction(db_url) as conn, connect(db_url) as reader:
        lock_partitions(conn, "rated_charges", [period.start.isoformat()])
        reader.execute("SET work_mem = '128MB'")  # the reader's aggregation, in memory too (3.5 s, 4.0 s in 4 MB)
        conn.execute("SET LOCAL work_mem = '128MB'")  # a month of rollups aggregates in memory
        _check_no_overlaps(conn, period)
        plans, kept_plans = plans_for_month(conn, period.start)
        terms = load_terms(conn, period, plans)
        needed = _days_needed(terms, period)
        missing = missing_days(needed, rolled_up_days(conn, needed[0], needed[-1] + timedelta(days=1)))
        if missing:
            raise MissingDataError(
                f"rated_charges {period.start.isoformat()} needs every day of {period.label} in usage_rollups"
                f"{' (and the edges of its customers local months)' if len(needed) > len(period.days()) else ''}; "
                f"missing partition(s): {', '.join(d.isoformat() for d in missing)}"
            )
        _check_priced_meters(terms, meters)
        conn.execute("DELETE FROM rated_charges WHERE period_start = %s", (period.start,))
        conn.execute("DELETE FROM unrated_usage WHERE period_start = %s", (period.start,))
        conn.execute("DELETE FROM usage_alerts WHERE period_start = %s", (period.start,))
        summary = RatingSummary(period, contracts=len(terms), plans_kept_as_issued=kept_plans)
        with conn.cursor().copy(_COPY_CHARGES) as copy:
            for month in _rated_months(reader, period, meters, terms, plans):
                summary.add(month.charges)
                summary.alerts += month.alerts
                _write_charges(copy, period, month, run_id)
        with conn.cursor() as cur:
            cur.executemany("""INSERT INTO usage_alerts (period_start, contract_id, meter, level, cap, used)
                               VALUES (%s, %s, %s, %s, %s, %s)""",
                            [(period.start, a.contract_id, a.meter, a.level, a.cap, a.used) for a in summary.alerts])
        # Usage no contract covers is kept and counted, never dropped: on the days it would be billed on.
        unrated = conn.execute(
            f"""INSERT INTO unrated_usage (period_start, org_id, chain, requests, bytes_out, reason)
                SELECT %(start)s, p.org_id, p.chain, sum(p.requests), sum(p.bytes_out), 'no contract covers these days'
                FROM ({_USAGE_ON_BILLED_DAYS}) p
                WHERE NOT EXISTS (SELECT 1 FROM contracts_in_force c WHERE c.org_id = p.org_id AND {_COVERS_BILLED_DAY})
                GROUP BY p.org_id, p.chain
                RETURNING org_id, requests""",
            {"start": period.start, "end": period.end}).fetchall()
        unrated_requests = sum(r[1] for r in unrated)
        conn.execute(
            """INSERT INTO rating_runs (period_start, contracts, charges, unrated_requests, dagster_run_id)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (period_start) DO UPDATE SET contracts = EXCLUDED.contracts, charges = EXCLUDED.charges,
                   unrated_requests = EXCLUDED.unrated_requests, dagster_run_id = EXCLUDED.dagster_run_id,
                   rated_at = EXCLUDED.rated_at""",
            (period.start, len(terms), summary.charge_count, unrated_requests, run_id))
    summary.unrated_requests, summary.unrated_orgs = unrated_requests, sorted({r[0] for r in unrated})
    return summary

