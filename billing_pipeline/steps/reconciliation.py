"""Reconciliation queries behind the asset checks: each returns what it compared, so a red check
shows both sides and the difference."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import psycopg
from psycopg import sql as sql_query

from ..domain.chains import known_chains
from ..domain.money import from_minor_units
from ..domain.parasut_invoice import net_of_discounts
from ..domain.periods import Period
from ..stores.clickhouse import UsageStore, sql_text
from ..stores.meter_sql import MeterSet
from ..stores.ledger import documents_against_ledger, verify
from ..stores.postgres import connect
from .usage import source_totals
from .usage_chunks import plan_chunks

RENEWAL_NOTICE_DAYS = 30
STUCK_AFTER = timedelta(hours=1)


@dataclass
class Finding:
    passed: bool
    rows: list[tuple] = field(default_factory=list)  # the offending rows, both sides and the difference
    counts: dict = field(default_factory=dict)


def lira_lines_match_rate(conn: psycopg.Connection, period: Period) -> Finding:
    """Every converted line equals its source amount times the invoice's rate, rounded half-up to
    the kurus, and every converted invoice's rate is its month's snapshot rate (a new version of an
    issued invoice: the rate that invoice was issued at). One exception, the
    rule of ``domain/invoicing.py``: a month free in the contract's currency is free in lira, its
    last discount line taking the lines' separate roundings; its amount is then fixed by the other
    lines, each checked (counted in the metadata). Only invoices: a correction document's line is
    the difference of two versions' lines, each rounded from its source (-4,245.67 less -2,122.84
    is -2,122.83 where -50.00 USD at 42.4567 is -2,122.84); corrections_add_up holds it to them."""
    found = conn.execute(
        """SELECT l.invoice_id, l.line_no, l.source_amount, l.fx_rate, l.amount,
                  round(l.source_amount * l.fx_rate, 2) AS expected, l.amount - round(l.source_amount * l.fx_rate, 2),
                  l.amount < 0 AND i.subtotal = 0
                  AND l.line_no = (SELECT max(m.line_no) FROM invoice_lines m
                                   WHERE m.invoice_id = l.invoice_id AND m.amount < 0)
                  AND (SELECT sum(m.source_amount) FROM invoice_lines m WHERE m.invoice_id = l.invoice_id) = 0
                  AS free_month
           FROM invoice_lines l JOIN invoices i USING (invoice_id)
           WHERE i.period_start = %(start)s AND i.kind = 'INVOICE' AND l.source_amount IS NOT NULL
             AND l.amount <> round(l.source_amount * l.fx_rate, 2)
           UNION ALL
           SELECT i.invoice_id, 0, NULL, i.fx_rate, NULL, coalesce(issued.fx_rate, s.rate),
                  i.fx_rate - coalesce(issued.fx_rate, s.rate), false
           FROM invoices i JOIN fx_snapshots s ON s.period_start = i.period_start AND s.currency = i.source_currency
           -- a new version of an issued invoice keeps the rate that invoice was issued at
           LEFT JOIN LATERAL (SELECT j.fx_rate FROM invoices j
                              WHERE j.contract_id = i.contract_id AND j.period_start = i.period_start
                                AND j.kind = 'INVOICE' AND j.status NOT IN ('DRAFT', 'VOID')
                              ORDER BY j.version DESC LIMIT 1) issued ON true
           WHERE i.period_start = %(start)s AND i.fx_rate IS DISTINCT FROM coalesce(issued.fx_rate, s.rate)
             AND i.status = 'DRAFT'
           ORDER BY 1, 2""", {"start": period.start}).fetchall()
    rows = [r[:7] for r in found if not r[7]]
    converted = conn.execute(
        """SELECT count(*) FROM invoice_lines l JOIN invoices i USING (invoice_id)
           WHERE i.period_start = %s AND i.kind = 'INVOICE' AND l.source_amount IS NOT NULL""",
        (period.start,)).fetchone()[0]
    return Finding(not rows, rows, {"converted_lines": converted, "differing": len(rows),
                                    "free_months_rounded_to_zero": len(found) - len(rows)})


def renewal_notices(conn: psycopg.Connection, period: Period) -> Finding:
    """Contracts whose term ends within 30 days of the month's end and that do not renew by themselves."""
    rows = conn.execute(
        """SELECT contract_id, org_id, end_at::date, (end_at::date - %(end)s::date) AS days_left FROM contracts
           WHERE NOT auto_renew AND end_at IS NOT NULL AND end_at >= %(end)s AND end_at < %(end)s + %(window)s
           ORDER BY end_at, contract_id""",
        {"end": period.end, "window": timedelta(days=RENEWAL_NOTICE_DAYS)}).fetchall()
    return Finding(not rows, rows, {"ending_within_30_days": len(rows)})


def stuck_outbox(conn: psycopg.Connection, sink: str, older_than: timedelta = STUCK_AFTER) -> Finding:
    """Writes left PENDING (maybe sent) or FAILED for longer than ``older_than``."""
    rows = conn.execute(
        """SELECT idempotency_key, invoice_id, status, attempts, updated_at, left(coalesce(last_error, ''), 200)
           FROM sink_outbox WHERE sink = %s AND status IN ('PENDING', 'FAILED') AND updated_at < now() - %s
           ORDER BY updated_at LIMIT 50""", (sink, older_than)).fetchall()
    total = conn.execute("SELECT count(*) FROM sink_outbox WHERE sink = %s AND status IN ('PENDING', 'FAILED') "
                         "AND updated_at < now() - %s", (sink, older_than)).fetchone()[0]
    return Finding(total == 0, rows, {"stuck": total, "threshold_minutes": int(older_than.total_seconds() // 60)})


def ledger_intact(db_url: str) -> Finding:
    """The chain and balances (verify), and every issued document against the ledger's record of
    its issue (documents_against_ledger)."""
    with connect(db_url) as conn:
        result = verify(conn)
        documents = documents_against_ledger(conn)
    return Finding(result.ok and not documents.problems, [(p,) for p in documents.problems],
                   {"entries": result.entries, "transactions": result.transactions, "head": result.head,
                    "first_error": result.first_error or "none", "documents_compared": documents.documents,
                    "documents_differing": len(documents.problems),
                    "first_difference": documents.problems[0] if documents.problems else "none"})


def rollups_match_clickhouse(store: UsageStore, db_url: str, start: datetime, end: datetime,
                             lookback_hours: int = 24) -> Finding:
    """Per UTC day of [start, end): PostgreSQL's rollup sums against a direct ClickHouse aggregation.
    One query per chunk of days, the rollup's chunks (the same copies are in reach): the plain
    deduplication groups the chunk's rows by request id, which stays small where a month at once
    would not, and spills to disk past a bound (usage_direct_totals.sql)."""
    # every additive meter too: pricing reads them, and compute units edited in PostgreSQL billed
    # 851.20 EUR instead of 450.00 with this check green
    meters = MeterSet.load()
    columns = ["requests", "successful_requests", "bytes_out"] + meters.additive_columns
    sql, chains = meters.direct_totals_sql(sql_text("usage_direct_totals")), sorted(known_chains())
    clickhouse = {}
    for first, following in plan_chunks(start, end, source_totals(store, start, end)):
        for r in store.query_arrow(sql, {"window_start": first, "window_end": following, "known_chains": chains,
                                         "lookback_start": first - timedelta(hours=lookback_hours),
                                         **meters.parameters()}).to_pylist():
            clickhouse[r["day"]] = tuple(r[c] for c in columns)
    with connect(db_url) as conn:
        postgres = {r[0]: tuple(int(v) for v in r[1:]) for r in conn.execute(
            sql_query.SQL("SELECT day, {} FROM usage_rollups WHERE day >= %s AND day < %s GROUP BY day").format(
                sql_query.SQL(", ").join(sql_query.SQL("sum({})").format(sql_query.Identifier(c)) for c in columns)),
            (start.date(), end.date()))}
    rows, nothing = [], (0,) * len(columns)
    for day in sorted(set(clickhouse) | set(postgres)):
        ch, pg = clickhouse.get(day, nothing), postgres.get(day, nothing)
        for meter, c, p in zip(columns, ch, pg):
            if c != p:
                rows.append((day, meter, c, p, p - c))
    return Finding(not rows, rows, {"days": len(set(clickhouse) | set(postgres)), "differing": len(rows)})


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), timezone.utc)


def late_raw_rows(store: UsageStore, db_url: str, days: int = 35, today: date | None = None) -> Finding:
    """Raw rows that arrived for a day after its rollup: rows in ClickHouse now minus rows the
    rollup counted, for the last ``days`` days rolled up."""
    today = today or datetime.now(timezone.utc).date()
    since = today - timedelta(days=days)
    with connect(db_url) as conn:
        seen = {r[0]: (int(r[1]), r[2]) for r in conn.execute(
            "SELECT day, raw_rows, rolled_up_at FROM usage_rollup_days WHERE day >= %s ORDER BY day", (since,))}
    if not seen:
        return Finding(True, [], {"days_checked": 0, "late_rows": 0})
    now = {r["day"]: r["raw_rows"] for r in store.query_arrow(sql_text("usage_raw_counts"), {
        "since": _utc_midnight(min(seen)), "until": _utc_midnight(max(seen) + timedelta(days=1))}).to_pylist()}
    rows = [(day, counted, now.get(day, 0), now.get(day, 0) - counted, rolled_up_at)
            for day, (counted, rolled_up_at) in sorted(seen.items()) if now.get(day, 0) != counted]
    return Finding(not rows, rows, {"days_checked": len(seen), "late_rows": sum(r[3] for r in rows)})


def corrections_add_up(conn: psycopg.Connection, period: Period) -> Finding:
    """Per corrected contract-month and rated charge: the issued invoice's line plus every issued
    correction document's line equal the latest corrected version's line."""
    rows = conn.execute(
        """WITH latest AS (
               SELECT DISTINCT ON (contract_id) contract_id, invoice_id, version FROM invoices
               WHERE period_start = %(start)s AND kind = 'INVOICE' AND status = 'CORRECTED'
               ORDER BY contract_id, version DESC),
           original AS (
               SELECT DISTINCT ON (i.contract_id) i.contract_id, i.invoice_id FROM invoices i JOIN latest USING (contract_id)
               WHERE i.period_start = %(start)s AND i.kind = 'INVOICE' AND i.status IN ('ISSUED', 'PAID')
               ORDER BY i.contract_id, i.version),
           sent AS (
               SELECT o.contract_id, l.charge_id, l.amount FROM original o JOIN invoice_lines l USING (invoice_id)
               UNION ALL
               SELECT d.contract_id, l.charge_id, l.amount FROM invoices d
                   JOIN latest v ON v.contract_id = d.contract_id AND d.version <= v.version
                   JOIN invoice_lines l ON l.invoice_id = d.invoice_id
               WHERE d.period_start = %(start)s AND d.kind <> 'INVOICE' AND d.status IN ('ISSUED', 'PAID')),
           sent_total AS (SELECT contract_id, charge_id, sum(amount) AS amount FROM sent GROUP BY 1, 2),
           in_force AS (SELECT v.contract_id, l.charge_id, l.amount FROM latest v JOIN invoice_lines l USING (invoice_id))
           SELECT v.invoice_id, coalesce(s.charge_id, f.charge_id), coalesce(s.amount, 0), coalesce(f.amount, 0),
                  coalesce(f.amount, 0) - coalesce(s.amount, 0)
           FROM sent_total s FULL JOIN in_force f ON s.contract_id = f.contract_id AND s.charge_id = f.charge_id
           JOIN latest v ON v.contract_id = coalesce(s.contract_id, f.contract_id)
           WHERE coalesce(s.amount, 0) <> coalesce(f.amount, 0) ORDER BY 1, 2""", {"start": period.start}).fetchall()
    checked = conn.execute("SELECT count(DISTINCT contract_id) FROM invoices WHERE period_start = %s "
                           "AND kind = 'INVOICE' AND status = 'CORRECTED'", (period.start,)).fetchone()[0]
    return Finding(not rows, rows, {"corrected_invoices": checked, "differing_lines": len(rows)})


def rollups_rated_once(conn: psycopg.Connection, period: Period) -> Finding:
    """The month's usage, on the days it is billed on (UTC days; an org billed in another timezone
    on its own, each UTC day's rollup cut at its local midnight): each part covered by exactly one
    contract in force that was rated, or by none and then counted in unrated_usage; never by two;
    and each day's rows still the requests its rollup recorded (usage_rollup_days). Rows name what
    is wrong: (day, org, chain, problem, requests, accounted requests); the day is the customer's."""
    from .rating import _COVERS_BILLED_DAY, _USAGE_ON_BILLED_DAYS  # the rating's own rules, read alike

    params = {"start": period.start, "end": period.end}
    # the month's usage parts, built once for the problems and the counts (a temporary table of
    # this connection's own, dropped below)
    conn.execute("DROP TABLE IF EXISTS pg_temp.month_usage_parts")
    conn.execute(f"CREATE TEMPORARY TABLE month_usage_parts AS {_USAGE_ON_BILLED_DAYS}", params)
    rows = conn.execute(
        f"""WITH cover AS (
                SELECT p.local_day AS day, p.org_id, p.chain, p.requests, count(c.contract_id) AS contracts,
                       min(c.contract_id) AS contract_id
                FROM month_usage_parts p
                LEFT JOIN contracts_in_force c ON c.org_id = p.org_id AND {_COVERS_BILLED_DAY}
                GROUP BY p.day, p.local_day, p.org_id, p.project_id, p.chain, p.requests)
            SELECT day, org_id, chain, format('covered by %%s contracts', contracts), requests, requests * contracts
                FROM cover WHERE contracts > 1
            UNION ALL
            SELECT day, org_id, chain, format('contract %%s has no rated charges', contract_id), requests, 0
                FROM cover v WHERE contracts = 1 AND NOT EXISTS (
                    SELECT 1 FROM rated_charges rc WHERE rc.period_start = %(start)s AND rc.contract_id = v.contract_id)
            UNION ALL
            SELECT NULL, coalesce(a.org_id, b.org_id), coalesce(a.chain, b.chain),
                   'requests no contract covers vs unrated_usage', coalesce(a.requests, 0), coalesce(b.requests, 0)
                FROM (SELECT org_id, chain, sum(requests) AS requests FROM cover WHERE contracts = 0 GROUP BY 1, 2) a
                FULL JOIN (SELECT org_id, chain, sum(requests) AS requests FROM unrated_usage
                           WHERE period_start = %(start)s GROUP BY 1, 2) b ON a.org_id = b.org_id AND a.chain = b.chain
                WHERE coalesce(a.requests, 0) <> coalesce(b.requests, 0)
            UNION ALL
            -- the rows are the ones the rollup wrote: rows lost or added since leave both sides above agreeing
            SELECT d.day, NULL, NULL, 'usage_rollups rows vs the requests the day''s rollup recorded',
                   coalesce(r.requests, 0), d.requests
                FROM usage_rollup_days d
                LEFT JOIN (SELECT day, sum(requests) AS requests FROM usage_rollups
                           WHERE day >= %(start)s::date - 1 AND day < %(end)s::date + 1 GROUP BY day) r USING (day)
                WHERE d.day >= %(start)s::date - 1 AND d.day < %(end)s::date + 1
                  AND coalesce(r.requests, 0) <> d.requests
            ORDER BY 1 NULLS FIRST, 2, 3""", params).fetchall()
    counted = conn.execute("SELECT count(*), coalesce(sum(requests), 0) FROM month_usage_parts").fetchone()
    conn.execute("DROP TABLE month_usage_parts")
    return Finding(not rows, rows, {"usage_parts": counted[0], "requests": int(counted[1]), "problems": len(rows)})


def stripe_live_totals(db_url: str, gateway, since: date) -> Finding:
    """Each Stripe invoice we issued since ``since`` (UTC), fetched again now: its status and
    figures against ours (catches a void or an edit made in the Dashboard after issuance). By the
    day it was issued, not its billing month: a month issued late, or a correction of an old one,
    is compared as long as any other invoice issued with it."""
    with connect(db_url) as conn:
        issued = conn.execute(
            """SELECT invoice_id, external_id, currency, subtotal, status FROM invoices
               WHERE sink = 'STRIPE' AND external_id IS NOT NULL AND status IN ('ISSUED', 'PAID') AND kind <> 'CREDIT_NOTE'
                 AND issued_at >= %s ORDER BY invoice_id""", (_utc_midnight(since),)).fetchall()
    rows = []
    for invoice_id, stripe_id, currency, subtotal, status in issued:
        obj = gateway.request("get", f"/v1/invoices/{stripe_id}")
        theirs = from_minor_units(obj["subtotal"], currency.strip())
        allowed = ("paid",) if status == "PAID" else ("open", "paid")  # paid may precede its event
        if theirs != Decimal(subtotal) or obj["status"] not in allowed:
            rows.append((invoice_id, stripe_id, f"{subtotal} {status}", f"{theirs} {obj['status']}",
                         theirs - Decimal(subtotal)))
    return Finding(not rows, rows, {"compared": len(issued), "differing": len(rows)})


def parasut_live_totals(db_url: str, client, since: date) -> Finding:
    """Each Parasut document we issued since ``since`` (UTC; by the day it was issued, as
    stripe_live_totals), fetched again now: its net, KDV and total against ours (a credit note's
    refund bill with the signs turned), and not cancelled or archived."""
    with connect(db_url) as conn:
        issued = conn.execute(
            """SELECT invoice_id, kind, external_id, subtotal, tax, total FROM invoices
               WHERE sink = 'PARASUT' AND external_id IS NOT NULL AND status IN ('ISSUED', 'PAID')
                 AND issued_at >= %s ORDER BY invoice_id""", (_utc_midnight(since),)).fetchall()
    rows = []
    for invoice_id, kind, external_id, subtotal, tax, total in issued:
        path = f"/purchase_bills/{external_id}" if kind == "CREDIT_NOTE" else f"/sales_invoices/{external_id}"
        attributes = client.request("GET", path)["data"]["attributes"]
        sign = -1 if kind == "CREDIT_NOTE" else 1
        ours = tuple(Decimal(v) for v in (subtotal, tax, total))
        theirs = tuple(sign * v for v in (net_of_discounts(attributes), Decimal(str(attributes.get("total_vat") or 0)),
                                          Decimal(str(attributes.get("net_total") or 0))))
        gone = attributes.get("item_type") == "cancelled" or attributes.get("archived")
        if ours != theirs or gone:
            rows.append((invoice_id, path, "/".join(f"{v:f}" for v in ours),
                         "/".join(f"{v:f}" for v in theirs) + (" cancelled/archived" if gone else ""),
                         theirs[2] - ours[2]))
    return Finding(not rows, rows, {"compared": len(issued), "differing": len(rows)})
