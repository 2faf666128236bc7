"""Issue a month's credit notes in Stripe: each against the Stripe invoice it corrects.

Each credit note line credits the line of the issued invoice that carried the same rated charge
(`invoice_line_item` with an amount, so Stripe Tax credits its share of tax itself); a charge the
invoice did not carry, or carried as a negative line (a discount that grew: Stripe credits only
what a line charged), becomes a custom line. What the invoice still has open is reduced first
(Stripe's pre-payment part); whatever was already paid goes to the customer's balance
(`credit_amount`), which Stripe applies to their next invoice. A credit note is created in one
call, with an idempotency key per document; after an uncertain attempt the invoice's credit notes
are listed before anything is sent again.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import psycopg

from ...domain import ledger as ledger_rules
from ...domain.money import from_minor_units, to_minor_units
from ...domain.periods import Period
from ...domain.stripe_invoice import StripeRequest, idempotency_key
from ...stores import ledger as ledger_store
from ...stores.postgres import connect, partition_lock_held
from .. import outbox
from .gateway import StripeGateway, StripeRefused, StripeUnavailable
from .issuing import SINK, IssueOutcome, StripeMismatch, _send

_CREDIT_NOTES_SQL = """
SELECT d.invoice_id, d.org_id, d.currency, d.subtotal, d.tax, d.corrects_invoice_id, o.external_id,
       o.external_customer_id, d.contract_id, d.period_start, d.version
FROM invoices d JOIN invoices o ON o.invoice_id = d.corrects_invoice_id JOIN contracts c ON c.contract_id = d.contract_id
WHERE d.period_start = %s AND d.kind = 'CREDIT_NOTE' AND d.status IN ('DRAFT', 'ISSUING') AND c.region = 'GLOBAL'
ORDER BY d.invoice_id
"""


@dataclass(frozen=True)
class CreditNote:
    invoice_id: str  # ours: '<contract>:<YYYY-MM>:v<n>:credit-note'
    org_id: str
    currency: str
    subtotal: Decimal  # negative
    tax: Decimal
    corrects: str  # our issued invoice
    stripe_invoice_id: str | None
    customer_id: str | None
    contract_id: str
    period_label: str
    version: int
    lines: tuple[tuple[int, str, str, Decimal], ...]  # (line_no, charge_id, description, amount < 0)


def load_credit_notes(conn: psycopg.Connection, period: Period) -> list[CreditNote]:
    rows = conn.execute(_CREDIT_NOTES_SQL, (period.start,)).fetchall()
    lines: dict[str, list] = {r[0]: [] for r in rows}
    for invoice_id, *line in conn.execute(
            "SELECT invoice_id, line_no, charge_id, description, amount FROM invoice_lines WHERE invoice_id = ANY(%s) "
            "ORDER BY invoice_id, line_no", (list(lines),)):
        lines[invoice_id].append((line[0], line[1], line[2], Decimal(line[3])))
    return [CreditNote(r[0], r[1], r[2].strip(), Decimal(r[3]), Decimal(r[4]), r[5], r[6], r[7], r[8],
                       r[9].strftime("%Y-%m"), r[10], tuple(lines[r[0]])) for r in rows]


def credit_note_lines(note: CreditNote, stripe_lines: list[dict], original_line_nos: dict[str, int]) -> list[dict]:
    """Stripe credit note lines: each against the Stripe line that carried the charge on the issued
    invoice (found by our line number in its metadata, a folded range included) and charged for it,
    else custom."""
    by_line_no: dict[int, str] = {}
    for line in stripe_lines:
        if int(line.get("amount") or 0) <= 0:  # a discount's line: nothing on it to credit
            continue
        ref = (line.get("metadata") or {}).get("line_nos") or ""
        first, _, last = ref.partition("-")
        if first.isdigit():
            for n in range(int(first), int(last or first) + 1):
                by_line_no[n] = line["id"]
    out = []
    for _line_no, charge_id, description, amount in note.lines:
        minor = str(to_minor_units(-amount, note.currency))
        stripe_line = by_line_no.get(original_line_nos.get(charge_id, -1))
        if stripe_line:
            out.append({"type": "invoice_line_item", "invoice_line_item": stripe_line, "amount": minor})
        else:
            out.append({"type": "custom_line_item", "description": description[:500], "quantity": "1",
                        "unit_amount": minor})
    return out


def issue_credit_notes(db_url: str, gateway: StripeGateway | None, period: Period) -> list[IssueOutcome]:
    with partition_lock_held(db_url, "stripe_invoices", period.start.isoformat()):  # runs of a month take turns
        return _issue_credit_notes_in_turn(db_url, gateway, period)


def _issue_credit_notes_in_turn(db_url: str, gateway: StripeGateway | None, period: Period) -> list[IssueOutcome]:
    with connect(db_url, autocommit=True) as conn:
        notes = load_credit_notes(conn, period)
        outcomes = []
        for note in notes:
            try:
                if gateway is None:
                    outcomes.append(_dry_run(conn, note))
                    continue
                issue_credit_note(conn, gateway, note)
                outcomes.append(IssueOutcome(note.invoice_id, note.org_id, note.currency, "ISSUED", note.subtotal))
            except (StripeRefused, StripeUnavailable, StripeMismatch) as exc:
                outbox.stop_invoice(conn, note.invoice_id, str(exc))
                outcomes.append(IssueOutcome(note.invoice_id, note.org_id, note.currency, "FAILED", note.subtotal,
                                             reason=str(exc)))
    return outcomes


def _params(conn, gateway: StripeGateway | None, note: CreditNote) -> dict:
    original_line_nos = dict(conn.execute("SELECT charge_id, line_no FROM invoice_lines WHERE invoice_id = %s",
                                          (note.corrects,)).fetchall())
    stripe_lines = gateway.list_all(f"/v1/invoices/{note.stripe_invoice_id}/lines") if gateway else []
    return {"invoice": note.stripe_invoice_id or f"{{stripe_invoice:{note.corrects}}}",
            "lines": credit_note_lines(note, stripe_lines, original_line_nos),
            "memo": f"Correction of invoice {note.corrects} for {note.period_label} (version {note.version})",
            "metadata": {"invoice_id": note.invoice_id, "corrects_invoice_id": note.corrects,
                         "contract_id": note.contract_id, "period": note.period_label, "version": str(note.version)}}


def issue_credit_note(conn: psycopg.Connection, gateway: StripeGateway, note: CreditNote) -> str:
    if not note.stripe_invoice_id:
        raise StripeMismatch(f"credit note {note.invoice_id}: invoice {note.corrects} has no Stripe invoice")
    conn.execute("""UPDATE invoices SET status = 'ISSUING', sink = %s, external_customer_id = %s
                    WHERE invoice_id = %s AND status IN ('DRAFT', 'ISSUING')""",
                 (SINK, note.customer_id, note.invoice_id))
    key = idempotency_key(note.invoice_id, "create_credit_note")
    earlier = outbox.rows(conn, [key]).get(key)
    created = earlier.response if earlier and earlier.status == "SENT" else None
    if created is None and earlier and earlier.status == "PENDING":
        for found in gateway.list_all("/v1/credit_notes", {"invoice": note.stripe_invoice_id}):
            if (found.get("metadata") or {}).get("invoice_id") == note.invoice_id:
                outbox.sent(conn, key, found["id"], {k: v for k, v in found.items() if k != "lines"})
                created = found
    if created is None:
        params = _params(conn, gateway, note)
        invoice = gateway.request("get", f"/v1/invoices/{note.stripe_invoice_id}")
        if invoice["status"] not in ("open", "paid"):
            raise StripeMismatch(f"credit note {note.invoice_id}: Stripe invoice {note.stripe_invoice_id} is "
                                 f"{invoice['status']}")
        # what the invoice has left open is reduced first; the rest was paid: credit the customer's balance.
        # Stripe refuses a credit note, and its preview, whose paid part no credit_amount covers: without
        # Stripe Tax the total is the lines' own, so a paid invoice is credited too; with it, the preview
        # tells the tax, and works while the invoice has enough left open (otherwise NOT CORRECTED).
        total = (_lines_total(params["lines"]) if not (invoice.get("automatic_tax") or {}).get("enabled")
                 else gateway.request("get", "/v1/credit_notes/preview", params)["total"])
        paid_part = total - min(total, invoice.get("amount_remaining", 0))
        if paid_part:
            params["credit_amount"] = str(paid_part)
        created = _send(conn, gateway, StripeRequest("create_credit_note", "post", "/v1/credit_notes", params, key),
                        note.invoice_id)
    record_credit_note(conn, note.invoice_id, created)
    return created["id"]


def _lines_total(lines: list[dict]) -> int:
    """A credit note's lines in minor units, as Stripe sums them when it adds no tax."""
    return sum(int(x["amount"]) if x["type"] == "invoice_line_item" else int(x["unit_amount"]) * int(x.get("quantity", 1))
               for x in lines)


def record_credit_note(conn: psycopg.Connection, invoice_id: str, obj: dict) -> bool:
    """ISSUING -> ISSUED with Stripe's figures (negative, like ours) and the ledger's CREDIT_NOTE."""
    with conn.transaction():
        row = conn.execute("SELECT org_id, currency, subtotal, status, corrects_invoice_id FROM invoices "
                           "WHERE invoice_id = %s FOR UPDATE", (invoice_id,)).fetchone()
        if row is None or row[3] != "ISSUING":
            return False
        org_id, currency = row[0], row[1].strip()
        subtotal = -from_minor_units(obj["subtotal"], currency)
        tax = -from_minor_units(obj["total"] - obj["subtotal"], currency)
        conn.execute(
            """UPDATE invoices SET status = 'ISSUED', external_id = %s, external_number = %s, pdf_url = %s,
                   external_status = %s, external_subtotal = %s, external_tax = %s, external_total = %s,
                   issued_at = now(), sink_error = NULL, sink_error_at = NULL WHERE invoice_id = %s""",
            (obj["id"], obj.get("number"), obj.get("pdf"), obj.get("status"), subtotal, tax, subtotal + tax,
             invoice_id))
        ledger_store.append(conn, [ledger_rules.document_issued("CREDIT_NOTE", invoice_id, org_id, currency,
                                                                Decimal(row[2]), tax, row[4])])
    return True


def _dry_run(conn: psycopg.Connection, note: CreditNote) -> IssueOutcome:
    params = _params(conn, None, note)
    count = outbox.record_dry_run(conn, SINK, note.invoice_id, [(
        idempotency_key(note.invoice_id, "create_credit_note"), outbox.payload("post", "/v1/credit_notes", params))])
    return IssueOutcome(note.invoice_id, note.org_id, note.currency, "DRY_RUN", note.subtotal, requests=count)
