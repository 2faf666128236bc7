"""Issue a month's Turkish credit notes in Parasut: a refund (iade) purchase bill per credit note.

Parasut records a customer's return as a purchase bill of item_type "refund" with the customer as
its supplier; its description names our credit note and the issued invoice it corrects. No
idempotency keys exist: the write goes through the outbox, and after an uncertain attempt the
customer's refund bills of that date are searched for our reference before anything is re-sent.
"""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg

from ...domain import ledger as ledger_rules
from ...domain.parasut_invoice import InvoiceRejected, TurkishInvoice, contact_attributes, refund_bill_body
from ...domain.periods import Period
from ...stores import ledger as ledger_store
from ...stores.postgres import connect, partition_lock_held
from .. import outbox
from .client import ParasutClient, ParasutRefused, ParasutUnavailable
from .issuing import (SINK, IssueOutcome, StillPending, _dec, _failed, _json, _mentions, _send, ensure_contact,
                      load_issuable)


def issue_refunds(db_url: str, client: ParasutClient | None, period: Period) -> list[IssueOutcome]:
    """Every Turkish credit note of the month; ``client=None`` records the requests (dry run)."""
    with partition_lock_held(db_url, "parasut_invoices", period.start.isoformat()):  # runs of a month take turns
        return _issue_refunds_in_turn(db_url, client, period)


def _issue_refunds_in_turn(db_url: str, client: ParasutClient | None, period: Period) -> list[IssueOutcome]:
    with connect(db_url) as conn:
        notes, _ = load_issuable(conn, period, kinds=("CREDIT_NOTE",))
    outcomes = []
    with connect(db_url, autocommit=True) as conn:
        for inv in notes:
            try:
                if client is None:
                    outcomes.append(_dry_run(conn, inv))
                    continue
                issue_refund(conn, client, inv)
                outcomes.append(IssueOutcome(inv.invoice_id, "ISSUED", inv.total, kind="REFUND"))
            except (InvoiceRejected, ParasutRefused, ParasutUnavailable, StillPending) as exc:
                outcomes.append(_failed(conn, inv.invoice_id, inv.total, str(exc)))
    return outcomes


def issue_refund(conn: psycopg.Connection, client: ParasutClient, inv: TurkishInvoice) -> str:
    refund_bill_body(inv, "{check}")  # refuses before anything is sent
    contact_id = ensure_contact(conn, client, inv)
    conn.execute("UPDATE invoices SET status = 'ISSUING', sink = %s, external_customer_id = %s "
                 "WHERE invoice_id = %s AND status IN ('DRAFT', 'ISSUING')", (SINK, contact_id, inv.invoice_id))

    def by_reference(_wait: bool = False) -> str | None:
        found = client.request("GET", "/purchase_bills", params={
            "filter[supplier_id]": contact_id, "filter[item_type]": "refund",
            "filter[issue_date]": inv.issue_date.isoformat()})["data"]
        ours = [b for b in found if _mentions(b["attributes"].get("description") or "", inv.invoice_id)]
        return ours[0]["id"] if ours else None

    bill_id, _how = _send(conn, client, f"parasut:{inv.invoice_id}:refund", inv.invoice_id, "/purchase_bills",
                          refund_bill_body(inv, contact_id), lookup=by_reference)
    attributes = client.request("GET", f"/purchase_bills/{bill_id}")["data"]["attributes"]
    record_refund(conn, inv.invoice_id, bill_id, attributes)
    return bill_id


def record_refund(conn: psycopg.Connection, invoice_id: str, bill_id: str, attributes: dict) -> bool:
    """ISSUING -> ISSUED with Parasut's figures (negative, like ours) and the ledger's CREDIT_NOTE."""
    with conn.transaction():
        row = conn.execute("SELECT org_id, currency, subtotal, tax, status, corrects_invoice_id FROM invoices "
                           "WHERE invoice_id = %s FOR UPDATE", (invoice_id,)).fetchone()
        if row is None or row[4] != "ISSUING":
            return False
        negative = {k: -_dec(attributes[k]) for k in ("gross_total", "total_vat", "net_total")
                    if attributes.get(k) is not None}
        conn.execute(
            """UPDATE invoices SET status = 'ISSUED', external_id = %s, external_number = %s, external_status = %s,
                   external_subtotal = %s, external_tax = %s, external_total = %s, e_document_kind = 'REFUND_BILL',
                   issued_at = now(), sink_error = NULL, sink_error_at = NULL WHERE invoice_id = %s""",
            (bill_id, attributes.get("invoice_no"), attributes.get("payment_status"), negative.get("gross_total"),
             negative.get("total_vat"), negative.get("net_total"), invoice_id))
        ledger_store.append(conn, [ledger_rules.document_issued("CREDIT_NOTE", invoice_id, row[0], row[1].strip(),
                                                                Decimal(row[2]), Decimal(row[3]), row[5])])
    return True


def _dry_run(conn: psycopg.Connection, inv: TurkishInvoice) -> IssueOutcome:
    body = refund_bill_body(inv, "{parasut_contact:" + inv.tax_number.strip() + "}")
    count = outbox.record_dry_run(conn, SINK, inv.invoice_id, [
        (f"parasut:contact:{inv.org_id}:{inv.tax_number.strip()}",
         outbox.payload("post", "/contacts", {"data": {"type": "contacts", "attributes": contact_attributes(inv)}})),
        (f"parasut:{inv.invoice_id}:refund", outbox.payload("post", "/purchase_bills", json.loads(_json(body))))])
    return IssueOutcome(inv.invoice_id, "DRY_RUN", inv.total, requests=count)
