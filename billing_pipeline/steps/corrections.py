"""invoice_corrections: new versions of issued invoices turned into credit notes and supplementary
invoices (domain/corrections.py has the rules), then marked CORRECTED once those are issued."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal

from ..domain.money import UNIT_PRICE_PLACES
from ..domain.corrections import Correction, VersionLine, correction_id, corrections
from ..domain.periods import Period
from ..stores.postgres import connect, lock_partitions, transaction
from .reconciliation import corrections_add_up

IN_FORCE = ("ISSUED", "PAID", "CORRECTED")


@dataclass(frozen=True)
class PlannedVersion:
    invoice_id: str  # the new version
    in_force: str  # the version it corrects from
    corrects: str  # the issued invoice its documents correct
    documents: tuple[tuple[str, Correction], ...]
    problem: str | None = None


_NEW_VERSIONS = """
SELECT i.invoice_id, i.contract_id, i.version, i.credits_applied, i.currency, i.tax_rate, c.region
FROM invoices i JOIN contracts c USING (contract_id)
WHERE i.period_start = %s AND i.kind = 'INVOICE' AND i.status = 'DRAFT' AND EXISTS (
    SELECT 1 FROM invoices j WHERE j.contract_id = i.contract_id AND j.period_start = i.period_start
    AND j.kind = 'INVOICE' AND j.version < i.version AND j.status NOT IN ('DRAFT', 'VOID'))
ORDER BY i.invoice_id
"""


def _lines(conn, invoice_ids: list[str]) -> dict[str, list[VersionLine]]:
    found: dict[str, list[VersionLine]] = defaultdict(list)
    for invoice_id, charge_id, description, quantity, amount, source in conn.execute(
            "SELECT invoice_id, charge_id, description, quantity, amount, source_amount FROM invoice_lines "
            "WHERE invoice_id = ANY(%s) ORDER BY invoice_id, line_no", (invoice_ids,)):
        found[invoice_id].append(VersionLine(charge_id, description, Decimal(quantity), Decimal(amount),
                                             None if source is None else Decimal(source)))
    return found


def plan_corrections(db_url: str, period: Period, run_id: str | None = None,
                     today: date | None = None) -> list[PlannedVersion]:
    """Freeze each new version of an issued invoice (DRAFT -> CORRECTING) and write its credit note
    and/or supplementary invoice as DRAFT documents, in one transaction; a version whose amounts
    did not change is CORRECTED at once. A version waits while an earlier one is still being
    issued or corrected."""
    today = today or datetime.now(timezone.utc).date()
    planned = []
    with transaction(db_url) as conn:
        lock_partitions(conn, "invoice_corrections", [period.start.isoformat()])
        for invoice_id, contract_id, version, credits, currency, tax_rate, region in conn.execute(
                _NEW_VERSIONS, (period.start,)).fetchall():
            earlier = conn.execute(
                """SELECT invoice_id, status, credits_applied FROM invoices WHERE contract_id = %s
                   AND period_start = %s AND kind = 'INVOICE' AND version < %s AND status NOT IN ('DRAFT', 'VOID')
                   ORDER BY version""", (contract_id, period.start, version)).fetchall()
            busy = [e for e in earlier if e[1] not in IN_FORCE]
            in_force, corrects = earlier[-1], next((e[0] for e in earlier if e[1] in ("ISSUED", "PAID")), None)
            problem = None
            if busy:
                problem = f"waits for {busy[0][0]} ({busy[0][1]}) to finish; a re-run continues"
            elif Decimal(in_force[2]) != Decimal(credits):
                problem = (f"prepaid credit applied would change from {in_force[2]} to {credits} {currency.strip()} "
                           "(the correction is larger than what the credit left due); correct it by hand")
            if problem:
                conn.execute("UPDATE invoices SET sink_error = %s, sink_error_at = now() WHERE invoice_id = %s",
                             (problem, invoice_id))
                planned.append(PlannedVersion(invoice_id, in_force[0], corrects or in_force[0], (), problem))
                continue
            lines = _lines(conn, [in_force[0], invoice_id])
            vat_rate = Decimal(tax_rate) if region == "TR" else None
            documents = tuple((correction_id(invoice_id, c.kind), c)
                              for c in corrections(lines[in_force[0]], lines[invoice_id], currency.strip(), vat_rate))
            for document_id, correction in documents:
                _insert_document(conn, invoice_id, document_id, correction, corrects, run_id, today)
            conn.execute(
                """UPDATE invoices SET status = CASE WHEN %s THEN 'CORRECTING' ELSE 'CORRECTED' END,
                       issued_at = CASE WHEN %s THEN NULL ELSE now() END, sink_error = NULL, sink_error_at = NULL
                   WHERE invoice_id = %s""", (bool(documents), bool(documents), invoice_id))
            planned.append(PlannedVersion(invoice_id, in_force[0], corrects, documents))
    return planned


def _insert_document(conn, version_id: str, document_id: str, c: Correction, corrects: str, run_id: str | None,
                     today: date) -> None:
    """The document copies its version's contract, currency, rate and FX snapshot; its own lines."""
    conn.execute(
        """INSERT INTO invoices (invoice_id, contract_id, org_id, period_start, period_end, version, status, kind,
               corrects_invoice_id, currency, subtotal, tax_rate, tax, credits_applied, total, contract_doc_sha256,
               dagster_run_id, issue_date, source_currency, fx_rate, fx_snapshot_ref, fx_estimated)
           SELECT %s, contract_id, org_id, period_start, period_end, version, 'DRAFT', %s, %s, currency, %s, tax_rate,
                  %s, 0, %s, contract_doc_sha256, %s, %s, source_currency, fx_rate, fx_snapshot_ref, fx_estimated
           FROM invoices WHERE invoice_id = %s""",
        (document_id, c.kind, corrects, c.subtotal, c.tax, c.total, run_id, today, version_id))
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO invoice_lines (invoice_id, line_no, charge_id, description, quantity, unit_price, amount,
                   currency, vat_rate, vat_amount, source_amount, source_currency, fx_rate, amount_before, amount_after)
               SELECT %s, %s, %s, %s, %s, %s, %s, currency, tax_rate, %s, %s, source_currency, fx_rate, %s, %s
               FROM invoices WHERE invoice_id = %s""",
            [(document_id, line.line_no, line.charge_id, line.description, line.quantity, _unit_price(line), line.amount,
              line.vat_amount, line.source_amount, line.amount_before, line.amount_after, version_id)
             for line in c.lines])


def _unit_price(line) -> Decimal:
    """A correction line's price per unit of its quantity difference (the marginal price); its
    amount when only the price changed."""
    if not line.quantity:
        return line.amount
    return (line.amount / line.quantity).quantize(Decimal(1).scaleb(-UNIT_PRICE_PLACES))


def complete_versions(db_url: str, period: Period) -> list[str]:
    """CORRECTING -> CORRECTED for each version whose documents are all issued; returns them."""
    with connect(db_url, autocommit=True) as conn:
        return [r[0] for r in conn.execute(
            """UPDATE invoices v SET status = 'CORRECTED', issued_at = now(), sink_error = NULL, sink_error_at = NULL
               WHERE v.period_start = %s AND v.kind = 'INVOICE' AND v.status = 'CORRECTING' AND NOT EXISTS (
                   SELECT 1 FROM invoices d WHERE d.contract_id = v.contract_id AND d.period_start = v.period_start
                   AND d.version = v.version AND d.kind <> 'INVOICE' AND d.status NOT IN ('ISSUED', 'PAID'))
               RETURNING v.invoice_id""", (period.start,)).fetchall()]


def stopped_corrections(db_url: str, period: Period) -> list[tuple[str, str]]:
    """The month's versions and documents that a correction left unissued with its reason (a
    correction that would give prepaid credit back, a provider's refusal): (invoice id, reason)."""
    with connect(db_url) as conn:
        return conn.execute(
            """SELECT invoice_id, sink_error FROM invoices WHERE period_start = %s AND sink_error IS NOT NULL
                 AND status IN ('DRAFT', 'ISSUING', 'CORRECTING') AND (kind <> 'INVOICE' OR version > 1)
               ORDER BY invoice_id""", (period.start,)).fetchall()


def dispute_report(db_url: str, period: Period, before: dict[str, str]) -> tuple[list[str], bool]:
    """What a dispute did, given the month's correction documents and their statuses before it
    (``before``, from month_corrections): the documents it created or moved on (not every one the
    month ever had), and each correction it stopped with its reason. Returns the lines and whether
    any correction stopped (the dispute is not done: finance must act)."""
    documents = [d for d in month_corrections(db_url, period) if before.get(d[0]) != d[7]]
    lines = [f"{d[1].lower().replace('_', ' ')} {d[0]}: {d[6]:,} {d[3].strip()} correcting {d[2]}, {d[7]}"
             + (f" ({d[11]})" if d[11] else "") for d in documents]
    stopped = stopped_corrections(db_url, period)
    lines += [f"NOT CORRECTED {invoice_id}: {reason}" for invoice_id, reason in stopped]
    lines += [f"VOIDED {invoice_id}: voided in the sink; its month is not drafted or billed again"
              for invoice_id in voided_invoices(db_url, period)]
    # what customers hold no longer adds up to the month (a document voided in the sink since):
    # "no amount changed" and exit 0 hid it while corrections_add_up was red
    with connect(db_url) as conn:
        differing = corrections_add_up(conn, period).rows
    lines += [f"NOT ADDING UP {invoice_id}: {charge_id}: the issued documents carry {sent:,}, the version in force "
              f"{in_force:,}" for invoice_id, charge_id, sent, in_force, _ in differing]
    stopped = stopped + [(r[0], "") for r in differing]
    if not documents and not stopped:
        earlier = f" ({len(before)} earlier correction document{'' if len(before) == 1 else 's'} unchanged)"
        lines.append(f"no amount changed: nothing new to issue{earlier if before else ''}")
    return lines, bool(stopped)


def voided_invoices(db_url: str, period: Period) -> list[str]:
    """The month's voided invoices, the latest of each contract: drafting leaves those months alone."""
    with connect(db_url) as conn:
        return [r[0] for r in conn.execute(
            """SELECT DISTINCT ON (contract_id) invoice_id FROM invoices
               WHERE period_start = %s AND status = 'VOID' AND kind = 'INVOICE' ORDER BY contract_id, version DESC""",
            (period.start,))]


def month_corrections(db_url: str, period: Period) -> list[tuple]:
    """Every correction document of the month, for the asset's table and the checks."""
    with connect(db_url) as conn:
        return conn.execute(
            """SELECT i.invoice_id, i.kind, i.corrects_invoice_id, i.currency, i.subtotal, i.tax, i.total, i.status,
                      i.sink, i.external_id, i.external_subtotal, i.sink_error, c.region
               FROM invoices i JOIN contracts c USING (contract_id)
               WHERE i.period_start = %s AND i.kind <> 'INVOICE' ORDER BY i.invoice_id""",
            (period.start,)).fetchall()
