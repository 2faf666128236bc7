"""Stripe's invoice events applied to our invoices and the ledger, each event exactly once.

invoice.finalized  ISSUING -> ISSUED and INVOICE_ISSUED (when the sink crashed before recording it)
invoice.paid       -> PAID and PAYMENT_RECEIVED for amount_paid
invoice.payment_failed  a PAYMENT_FAILED memo; the invoice stays ISSUED (Stripe retries the charge)
invoice.voided     -> VOID and INVOICE_VOIDED, reversing the issue

Events come from polling /v1/events with a cursor (the id of the newest event applied) or from
the webhook; the stripe_events table, keyed by event id, makes a second delivery a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

import psycopg

from ...domain import ledger as ledger_rules
from ...domain.money import from_minor_units
from ...stores import ledger as ledger_store
from ...stores.postgres import connect
from .gateway import StripeGateway
from .issuing import record_issued

EVENT_TYPES = ("invoice.finalized", "invoice.paid", "invoice.payment_failed", "invoice.voided")


@dataclass
class SyncResult:
    cursor: str | None
    applied: dict[str, int] = field(default_factory=dict)  # outcome -> count
    skipped_seen: int = 0

    @property
    def total(self) -> int:
        return sum(self.applied.values())


def fetch_new_events(gateway: StripeGateway, cursor: str | None) -> list[dict]:
    """Events newer than ``cursor``, oldest first. Stripe lists newest first; ``ending_before``
    pages towards newer events. Without a cursor: every event Stripe still keeps (30 days)."""
    query = {"types": list(EVENT_TYPES), "limit": "100"}
    if cursor is None:
        newest_first = gateway.list_all("/v1/events", {"types": list(EVENT_TYPES)})
        return list(reversed(newest_first))
    events: list[dict] = []
    while True:
        page = gateway.request("get", "/v1/events", {**query, "ending_before": cursor})
        batch = list(reversed(page["data"]))  # oldest first
        events.extend(batch)
        if not page.get("has_more") or not batch:
            return events
        cursor = batch[-1]["id"]


def sync_events(db_url: str, gateway: StripeGateway, cursor: str | None) -> SyncResult:
    result = SyncResult(cursor)
    events = fetch_new_events(gateway, cursor)
    with connect(db_url, autocommit=True) as conn:
        for event in events:
            outcome = apply_event(conn, event, via="POLL")
            if outcome is None:
                result.skipped_seen += 1
            else:
                result.applied[outcome] = result.applied.get(outcome, 0) + 1
            result.cursor = event["id"]
    return result


class _AlreadyApplied(Exception):
    pass


def apply_event(conn: psycopg.Connection, event: dict, via: str) -> str | None:
    """Apply one event in one transaction; None when it was applied before (by id)."""
    obj = event["data"]["object"]
    try:
        with conn.transaction():
            our_id = (obj.get("metadata") or {}).get("invoice_id")
            row = conn.execute(
                "SELECT invoice_id, org_id, currency, subtotal, status, external_id, external_tax, credits_applied "
                "FROM invoices WHERE invoice_id = %s FOR UPDATE", (our_id,)).fetchone() if our_id else None
            if row is not None and row[5] not in (None, obj["id"]):
                row = None  # our id in the metadata of another Stripe invoice: not ours to apply
            outcome = _outcome(conn, event, obj, row)
            inserted = conn.execute(
                """INSERT INTO stripe_events (event_id, event_type, stripe_invoice_id, invoice_id, created,
                       received_via, outcome) VALUES (%s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (event_id) DO NOTHING RETURNING 1""",
                (event["id"], event["type"], obj.get("id"), row[0] if row else None,
                 datetime.fromtimestamp(event["created"], timezone.utc), via, outcome)).fetchone()
            if inserted is None:  # applied concurrently (poll and webhook): undo ours
                raise _AlreadyApplied()
            return outcome
    except _AlreadyApplied:
        return None


def _outcome(conn: psycopg.Connection, event: dict, obj: dict, row) -> str:
    """Decide and write; the caller's transaction rolls all of it back if the event was seen."""
    seen = conn.execute("SELECT 1 FROM stripe_events WHERE event_id = %s", (event["id"],)).fetchone()
    if seen:
        raise _AlreadyApplied()
    if row is None:
        return "ignored: not one of our invoices"
    invoice_id, org_id, currency, subtotal, status = row[0], row[1], row[2].strip(), Decimal(row[3]), row[4]
    kind = event["type"]
    if kind == "invoice.finalized":
        return "issued" if record_issued(conn, invoice_id, obj) else f"already {status.lower()}"
    if status == "ISSUING":  # a later event overtook the finalized one we missed
        record_issued(conn, invoice_id, obj)
        status = "ISSUED"
    if kind == "invoice.paid":
        if status != "ISSUED":
            return f"ignored: invoice is {status}"
        amount = from_minor_units(obj.get("amount_paid") or 0, currency)
        conn.execute("UPDATE invoices SET status = 'PAID', external_status = 'paid', paid_at = %s WHERE invoice_id = %s",
                     (datetime.fromtimestamp(event["created"], timezone.utc), invoice_id))
        if amount:
            ledger_store.append(conn, [ledger_rules.payment_received(invoice_id, org_id, currency, amount)])
        return "paid"
    if kind == "invoice.payment_failed":
        if status != "ISSUED":
            return f"ignored: invoice is {status}"
        conn.execute("UPDATE invoices SET external_status = 'payment_failed' WHERE invoice_id = %s", (invoice_id,))
        ledger_store.append(conn, [ledger_rules.payment_failed(invoice_id, org_id, currency)])
        return "payment failed"
    if kind == "invoice.voided":
        if status != "ISSUED":
            return f"ignored: invoice is {status}"
        tax, credits = Decimal(row[6] or 0), Decimal(row[7])
        conn.execute("UPDATE invoices SET status = 'VOID', external_status = 'void' WHERE invoice_id = %s", (invoice_id,))
        ledger_store.append(conn, [ledger_rules.invoice_voided(invoice_id, org_id, currency, subtotal, tax, credits)])
        return "voided"
    return f"ignored: {kind}"
