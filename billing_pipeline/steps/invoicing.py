"""invoice_drafts: rated charges grouped per contract into rounded, taxed invoice drafts."""

from __future__ import annotations

import heapq
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Iterator

from ..domain.invoicing import LIRA, Conversion, InvoiceDraft, draft_invoice
from ..domain.money import MINOR_UNITS, round_money
from ..domain.periods import Period
from ..domain.terms import ContractTerms, RatedCharge
from ..errors import BillingError, MissingDataError
from ..stores.postgres import connect, lock_partitions, transaction
from .fx import month_rates
from .rating import load_terms


@dataclass(frozen=True)
class DraftedInvoice:
    invoice_id: str
    version: int
    draft: InvoiceDraft
    problem: str | None = None  # why it cannot be issued as drafted (no trustworthy FX rate)


def _conversion(terms: ContractTerms, rates: dict, period: Period) -> tuple[Conversion | None, str | None]:
    """A Turkish contract rated in another currency needs the month's rate; without one its draft
    stays in that currency and carries the reason, so that invoice stops and the others proceed."""
    if terms.region != "TR" or terms.currency == LIRA:
        return None, None
    status, rate, ref, estimated, failure = rates.get(terms.currency, (None,) * 5)
    if status == "OK":
        return Conversion(terms.currency, rate, ref, estimated), None
    if status is None:
        return None, (f"no {terms.currency}->TRY rate: fx_snapshot {period.start.isoformat()} has not been "
                      "materialized since this contract needed it")
    return None, f"no trustworthy {terms.currency}->TRY rate for {period.label}: {failure}"


def invoice_id(contract_id: str, period: Period, version: int) -> str:
    return f"{contract_id}:{period.label}:v{version}"


def _check_rating_is_current(conn, period: Period) -> None:
    key = period.start.isoformat()
    stale = rating_staleness(conn, period)
    if stale is not None:
        raise MissingDataError(f"invoice_drafts {key}: {stale}")


def rating_staleness(conn, period: Period) -> str | None:
    """Why the month's rated charges are out of date (never rated, a rollup re-run or a contract
    changed since), or None. Drafting refuses then, and so do the sinks (issue_guard)."""
    key = period.start.isoformat()
    rated_at = conn.execute("SELECT rated_at FROM rating_runs WHERE period_start = %s", (period.start,)).fetchone()
    if rated_at is None:
        return f"rated_charges partition {key} has not been materialized"
    # the edge days too: rating reads them for customers in other timezones (a re-run 1 December
    # changes a New York customer's November, and drafting took the stale charges without a word)
    newer = conn.execute(
        "SELECT min(day) FROM usage_rollup_days WHERE day >= %s AND day < %s AND rolled_up_at > %s",
        (period.start - timedelta(days=1), period.end + timedelta(days=1), rated_at[0])).fetchone()[0]
    if newer is not None:
        return (f"usage_rollups partition {newer.isoformat()} was re-run after rated_charges {key}; "
                f"re-materialize rated_charges {key} first")
    changed = conn.execute(
        """SELECT x.contract_id, x.changed FROM contract_changes x JOIN contracts c USING (contract_id)
           WHERE x.changed_at > %s AND c.start_at < %s AND (c.end_at IS NULL OR c.auto_renew OR c.end_at > %s)
           ORDER BY x.changed_at LIMIT 1""", (rated_at[0], period.end_utc, period.start_utc)).fetchone()
    if changed is not None:
        return (f"contract {changed[0]} changed ({changed[1]}) after rated_charges {key}; re-materialize "
                f"rated_charges {key} first (drafts from charges rated before would mix its old and new terms)")
    return None


# Each earlier month's version in force (its latest issued version, else its latest draft; never a
# voided one): what it consumed of the prepaid credit. A later draft not issued (a correction that
# stopped) consumed nothing: it was counted as if issued, and the next month got the credit back.
CREDIT_CONSUMED_BEFORE = """
    SELECT DISTINCT ON (contract_id, period_start) contract_id, period_start, invoice_id, version, status, currency,
           credits_applied
    FROM invoices
    WHERE period_start < %(start)s AND status <> 'VOID' AND kind = 'INVOICE'
    ORDER BY contract_id, period_start, status IN ('ISSUED', 'PAID', 'CORRECTING', 'CORRECTED') DESC, version DESC
"""


def credit_balances(conn, period: Period, terms: dict[str, ContractTerms]) -> dict[str, Decimal]:
    """Prepaid credit left at the start of the period: granted before its end, minus what the
    version in force of every earlier month's invoice consumed (exported with the month's audit
    snapshot as credit_consumed_before.csv: keep the two in step)."""
    granted = conn.execute(
        """SELECT contract_id, currency, sum(amount) FROM credit_grants WHERE granted_on < %s GROUP BY 1, 2""",
        (period.end,)).fetchall()
    used = dict(conn.execute(
        f"""SELECT contract_id, sum(credits_applied) FROM ({CREDIT_CONSUMED_BEFORE}) v GROUP BY 1""",
        {"start": period.start}).fetchall())
    balances = {}
    for contract_id, currency, amount in granted:
        t = terms.get(contract_id)
        if t is not None and currency.strip() != t.currency:
            raise BillingError(f"contract {contract_id}: credit granted in {currency.strip()} but it bills in {t.currency}")
        balances[contract_id] = Decimal(amount) - Decimal(used.get(contract_id) or 0)
    return balances


@dataclass
class DraftSummary:
    """What a month's drafting wrote, kept small whatever the number of contracts."""

    invoices: int = 0
    lines: int = 0
    totals: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    largest: list[DraftedInvoice] = field(default_factory=list)  # the 10 largest totals
    new_versions: list[DraftedInvoice] = field(default_factory=list)  # of issued invoices (the first 50)
    left_voided: list[str] = field(default_factory=list)  # voided invoices whose month is not billed again

    def add(self, drafted: list[DraftedInvoice]) -> None:
        self.invoices += len(drafted)
        for i in drafted:
            self.lines += len(i.draft.lines)
            self.totals[i.draft.currency] += i.draft.total
        self.largest = heapq.nlargest(10, self.largest + drafted, key=lambda i: i.draft.total)
        self.new_versions = (self.new_versions + [i for i in drafted if i.version > 1])[:50]


_BATCH = 2_000  # contracts drafted between two writes


def _charges_by_contract(conn, period: Period) -> Iterator[tuple[str, list[RatedCharge]]]:
    """Each contract's rated charges in order, from a server-side cursor (never the whole month at once)."""
    with conn.cursor(name="rated_charges") as cur:
        cur.itersize = 20_000
        cur.execute("""SELECT charge_id, contract_id, kind, chain, meter, description, quantity, unit_price, amount,
                              currency, CASE WHEN kind = 'DISCOUNT' THEN details->>'applies_to' END
                       FROM rated_charges WHERE period_start = %s ORDER BY contract_id, position""",
                    (period.start,))
        current, charges = None, []
        for row in cur:
            if row[1] != current:
                if current is not None:
                    yield current, charges
                current, charges = row[1], []
            charges.append(RatedCharge(row[0], row[1], row[2], row[3], row[4], row[5], Decimal(row[6]),
                                       Decimal(row[7]), Decimal(row[8]), row[9].strip(),
                                       {"applies_to": row[10]} if row[10] else {}))
        if current is not None:
            yield current, charges


def draft_month(db_url: str, period: Period, run_id: str | None = None) -> DraftSummary:
    """Replace the period's DRAFT invoices; issued ones are never touched (a new draft gets v+1).
    Contracts stream through in batches, so memory holds one batch whatever their number."""
    # Charges and issued versions are read on a second connection, and each batch is written by a
    # thread on this one while the next is drafted: PostgreSQL stores one batch as Python drafts
    # the next, where the two took turns (writing was 5.8 s of 14 s at 10k contracts). The reader
    # reads only what this transaction does not write (rated charges, invoices that left DRAFT).
    with transaction(db_url) as conn, connect(db_url) as reader, ThreadPoolExecutor(1, "draft-writer") as writer:
        lock_partitions(conn, "invoice_drafts", [period.start.isoformat()])
        _check_rating_is_current(conn, period)
        terms = {t.contract_id: t for t in load_terms(conn, period)}
        # A contract-month with a voided invoice is left as the void left it: drafted again, it went
        # out as a new invoice (a dispute of any day re-billed a 6,000 USD invoice finance had voided)
        voided = dict(conn.execute(
            "SELECT DISTINCT ON (contract_id) contract_id, invoice_id FROM invoices WHERE period_start = %s "
            "AND status = 'VOID' AND kind = 'INVOICE' ORDER BY contract_id, version DESC", (period.start,)).fetchall())
        summary = DraftSummary(left_voided=sorted(voided.values()))
        issued_versions = dict(conn.execute(
            "SELECT contract_id, max(version) FROM invoices WHERE period_start = %s AND status <> 'DRAFT' "
            "AND kind = 'INVOICE' GROUP BY 1", (period.start,)).fetchall())
        contract_rows = conn.execute("SELECT contract_id, signed_doc_sha256, vat_rate FROM contracts").fetchall()
        doc_hashes = {r[0]: r[1] for r in contract_rows}
        vat_rates = {r[0]: None if r[2] is None else Decimal(r[2]) for r in contract_rows}
        rates = month_rates(conn, period)
        credits = credit_balances(conn, period, terms)
        conn.execute("DELETE FROM invoices WHERE period_start = %s AND status = 'DRAFT' AND kind = 'INVOICE'",
                     (period.start,))
        written: Future | None = None  # the batch being written

        def draft_batch(batch: dict[str, list[RatedCharge]]) -> None:
            nonlocal written
            in_force = _versions_in_force(reader, period, sorted(batch))
            drafted = []
            for contract_id, charges in batch.items():
                if contract_id in voided:
                    continue
                current = in_force.get(contract_id)
                # a new version of an issued lira invoice converts at the rate it was issued at: a rate
                # fetched since re-priced the lines already invoiced (0.48 TRY of a 13.43 supplementary)
                conversion, problem = ((current.conversion, None) if current and current.conversion
                                       else _conversion(terms[contract_id], rates, period))
                # a new version of an issued invoice keeps the prepaid credit the issue consumed
                credit = current.credits_applied if current else credits.get(contract_id, Decimal(0))
                # and the KDV rate it was issued at: the rate of the month's supply, whatever the contract
                # says since (a rate changed later re-taxed the month's unchanged lines and issued nothing)
                vat_rate = current.tax_rate if current else vat_rates.get(contract_id)
                try:
                    draft = draft_invoice(terms[contract_id], charges, period, credit, conversion, vat_rate)
                except ValueError as exc:
                    raise BillingError(f"invoice_drafts {period.label}: {exc}") from None
                if current is not None and _same_lines(current.lines, draft.lines):
                    continue  # nothing changed since the version in force: no new version, nothing to issue
                version = issued_versions.get(contract_id, 0) + 1
                drafted.append(DraftedInvoice(invoice_id(contract_id, period, version), version, draft, problem))
            if written is not None:
                written.result()  # one batch in flight at a time; a failed write stops the drafting here
            written = writer.submit(_write_drafts, conn, period, drafted, doc_hashes, run_id)
            summary.add(drafted)

        batch: dict[str, list[RatedCharge]] = {}
        for contract_id, charges in _charges_by_contract(reader, period):
            batch[contract_id] = charges
            if len(batch) >= _BATCH:
                draft_batch(batch)
                batch = {}
        draft_batch(batch)
        written.result()
    return summary


def _write_drafts(conn, period: Period, drafted: list[DraftedInvoice], doc_hashes: dict, run_id: str | None) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO invoices (invoice_id, contract_id, org_id, period_start, period_end, version, status,
                   currency, subtotal, tax_rate, tax, credits_applied, total, contract_doc_sha256, dagster_run_id,
                   issue_date, source_currency, fx_rate, fx_snapshot_ref, fx_estimated, sink_error, sink_error_at)
               VALUES (%s, %s, %s, %s, %s, %s, 'DRAFT', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                       CASE WHEN %s::text IS NULL THEN NULL ELSE now() END)""",
            [(i.invoice_id, i.draft.contract_id, i.draft.org_id, period.start, period.end, i.version,
              i.draft.currency, i.draft.subtotal, i.draft.tax_rate, i.draft.tax, i.draft.credits_applied,
              i.draft.total, doc_hashes.get(i.draft.contract_id), run_id, period.end,
              *_fx_columns(i.draft), i.problem, i.problem) for i in drafted])
        with cur.copy("COPY invoice_lines (invoice_id, line_no, charge_id, description, quantity, unit_price,"
                      " amount, currency, vat_rate, vat_amount, source_amount, source_currency, fx_rate, discount_share)"
                      " FROM STDIN") as copy:
            for i in drafted:
                source_currency, fx_rate = _fx_columns(i.draft)[:2]
                for line in i.draft.lines:
                    copy.write_row((i.invoice_id, line.line_no, line.charge_id, line.description, line.quantity,
                                    line.unit_price, line.amount, i.draft.currency, i.draft.tax_rate,
                                    line.vat_amount, line.source_amount, source_currency, fx_rate,
                                    line.discount_share or None))


@dataclass(frozen=True)
class VersionInForce:
    invoice_id: str
    credits_applied: Decimal
    lines: tuple[tuple, ...]  # (charge_id, description, quantity, amount, vat_amount, discount_share)
    tax_rate: Decimal = Decimal(0)  # the KDV rate it was issued at (a share: 0.20)
    conversion: Conversion | None = None  # the rate its lira lines were converted at


def _versions_in_force(conn, period: Period, contract_ids: list[str]) -> dict[str, VersionInForce]:
    """Per contract of ``contract_ids``, the latest version sent or being sent (not a draft, not voided)."""
    versions = {r[0]: (r[1], Decimal(r[2]), Decimal(r[3]),
                       Conversion(r[4].strip(), Decimal(r[5]), r[6], r[7]) if r[5] is not None else None)
                for r in conn.execute(
        """SELECT DISTINCT ON (contract_id) contract_id, invoice_id, credits_applied, tax_rate, source_currency,
                  fx_rate, fx_snapshot_ref, coalesce(fx_estimated, false) FROM invoices
           WHERE period_start = %s AND kind = 'INVOICE' AND status NOT IN ('DRAFT', 'VOID')
             AND contract_id = ANY(%s)
           ORDER BY contract_id, version DESC""", (period.start, contract_ids))}
    lines: dict[str, list[tuple]] = defaultdict(list)
    for invoice_id, *line in conn.execute(
            """SELECT invoice_id, charge_id, description, quantity, amount, coalesce(vat_amount, 0),
                      coalesce(discount_share, 0) FROM invoice_lines WHERE invoice_id = ANY(%s) ORDER BY invoice_id, line_no""",
            ([v[0] for v in versions.values()],)):
        lines[invoice_id].append(tuple(line))
    return {c: VersionInForce(i, credits, tuple(lines[i]), rate, conversion)
            for c, (i, credits, rate, conversion) in versions.items()}


def _same_lines(current: tuple[tuple, ...], lines) -> bool:
    return current == tuple((x.charge_id, x.description, x.quantity, x.amount, x.vat_amount, x.discount_share)
                            for x in lines)


def _fx_columns(draft: InvoiceDraft) -> tuple:
    """source_currency, fx_rate, fx_snapshot_ref, fx_estimated"""
    c = draft.conversion
    return (None, None, None, False) if c is None else (c.currency, c.rate, c.ref, c.estimated)


def month_in_force(db_url: str, period: Period) -> tuple[int, dict[str, Decimal]]:
    """The month's invoices as they stand, whatever this run wrote: each contract's version in
    force (its latest issued version, else its latest draft; summary.versions_in_force) and their
    totals per currency."""
    with connect(db_url) as conn:
        rows = conn.execute(
            """SELECT trim(currency), count(*), sum(total) FROM (
                   SELECT DISTINCT ON (contract_id) currency, total FROM invoices
                   WHERE period_start = %s AND kind = 'INVOICE' AND status <> 'VOID'
                   ORDER BY contract_id, status IN ('ISSUED', 'PAID', 'CORRECTING', 'CORRECTED') DESC, version DESC) v
               GROUP BY 1 ORDER BY 1""", (period.start,)).fetchall()
    return sum(r[1] for r in rows), {r[0]: round_money(r[2], r[0]) for r in rows}


def draft_problems(db_url: str, period: Period) -> list[tuple[str, str]]:
    """What is wrong with the month's drafts, as (invoice, problem); empty when they add up: each
    draft's lines, subtotal, tax and total agree; and each contract's current version (its latest,
    draft or issued) has one line per rated charge of the month, rounded once from it; and no draft
    applies more prepaid credit than its contract has left."""
    with connect(db_url) as conn:
        conn.execute("SET LOCAL work_mem = '128MB'")  # the month's lines and charges hash in memory (2.3 s -> 1.4 s)
        return conn.execute(
            """WITH minor (currency, units) AS (SELECT * FROM unnest(%(currencies)s::text[], %(units)s::int[])),
               current_version AS (
                   SELECT DISTINCT ON (contract_id) invoice_id, contract_id FROM invoices
                   WHERE period_start = %(start)s AND kind = 'INVOICE' AND status <> 'VOID'
                   ORDER BY contract_id, version DESC),
               lines AS (
                   SELECT v.invoice_id, v.contract_id, l.line_no, l.charge_id,
                          coalesce(l.source_amount, l.amount) AS amount  -- a lira line: its source line
                   FROM current_version v JOIN invoice_lines l USING (invoice_id)),
               charges AS (
                   SELECT r.charge_id, r.contract_id, round(r.amount, m.units) AS rounded
                   FROM rated_charges r JOIN current_version v USING (contract_id)
                   LEFT JOIN minor m ON m.currency = r.currency
                   WHERE r.period_start = %(start)s),
               sums AS (
                   SELECT i.invoice_id, i.contract_id, i.kind, i.subtotal, i.tax, i.credits_applied, i.total,
                          coalesce(sum(l.amount), 0) AS line_sum
                   FROM invoices i LEFT JOIN invoice_lines l USING (invoice_id)
                   WHERE i.period_start = %(start)s AND i.status = 'DRAFT' GROUP BY i.invoice_id)
               SELECT invoice_id, format('lines sum to %%s, subtotal is %%s', line_sum, subtotal) FROM sums
                   WHERE line_sum <> subtotal
               UNION ALL SELECT invoice_id, format('total %%s is not subtotal %%s + tax %%s - credits %%s',
                                                   total, subtotal, tax, credits_applied) FROM sums
                   WHERE total <> subtotal + tax - credits_applied
               UNION ALL SELECT invoice_id, format('negative total %%s', total) FROM sums
                   WHERE total < 0 AND kind <> 'CREDIT_NOTE'
               UNION ALL SELECT min(invoice_id), format('%%s current drafts for contract %%s', count(*), contract_id)
                   FROM sums WHERE kind = 'INVOICE' GROUP BY contract_id HAVING count(*) > 1
               UNION ALL SELECT invoice_id, format('prepaid credit %%s applied, but the contract has %%s left',
                                                   credits_applied, allowed) FROM (
                   -- granted before the month's end less what earlier months consumed; a new version of an
                   -- issued invoice: what the issue consumed (an edited draft gave away 12,000 USD unbacked)
                   SELECT d.invoice_id, d.credits_applied, coalesce(
                       (SELECT j.credits_applied FROM invoices j WHERE j.contract_id = d.contract_id
                        AND j.period_start = d.period_start AND j.kind = 'INVOICE'
                        AND j.status NOT IN ('DRAFT', 'VOID') ORDER BY j.version DESC LIMIT 1),
                       (SELECT coalesce(sum(g.amount), 0) FROM credit_grants g
                        WHERE g.contract_id = d.contract_id AND g.granted_on < %(end)s)
                       - (SELECT coalesce(sum(v.credits_applied), 0) FROM (""" + CREDIT_CONSUMED_BEFORE + """) v
                          WHERE v.contract_id = d.contract_id)) AS allowed
                   FROM invoices d WHERE d.period_start = %(start)s AND d.status = 'DRAFT' AND d.kind = 'INVOICE'
                     AND d.credits_applied > 0) credit
                   WHERE credits_applied > allowed
               UNION ALL SELECT DISTINCT r.contract_id, 'rated charges but no invoice (draft or issued) for the month'
                   FROM rated_charges r WHERE r.period_start = %(start)s AND NOT EXISTS (
                       SELECT 1 FROM invoices i WHERE i.contract_id = r.contract_id
                       AND i.period_start = r.period_start AND i.kind = 'INVOICE')  -- a voided one: left alone
               UNION ALL SELECT coalesce(l.invoice_id, v.invoice_id), CASE
                       WHEN l.charge_id IS NULL THEN format('rated charge %%s is on no line', c.charge_id)
                       WHEN c.charge_id IS NULL THEN format('line %%s names charge %%s, which the month did not rate',
                                                            l.line_no, l.charge_id)
                       ELSE format('line %%s is %%s, its rated charge %%s rounds to %%s', l.line_no, l.amount,
                                   c.charge_id, c.rounded) END
                   FROM lines l FULL JOIN charges c ON c.charge_id = l.charge_id AND c.contract_id = l.contract_id
                   LEFT JOIN current_version v ON v.contract_id = c.contract_id
                   WHERE l.charge_id IS NULL OR c.charge_id IS NULL OR c.rounded IS DISTINCT FROM l.amount
               ORDER BY 1, 2""", {"start": period.start, "end": period.end, "currencies": list(MINOR_UNITS),
                                  "units": list(MINOR_UNITS.values())}).fetchall()
