"""Issue a month's global invoices in Stripe, exactly once, whatever crashed before.

Per invoice: the draft is frozen (ISSUING), a Stripe draft invoice is created, one item per line
is attached, prepaid credit becomes a customer balance credit, Stripe's subtotal is compared with
ours, and only then is it finalized. Every write goes through the outbox with an idempotency key
derived from (invoice id and version, step, line); a write left PENDING by a crash is looked up in
Stripe before it is sent again, so a re-run converges to one finalized invoice even after
Stripe has forgotten the key (24 h). Invoices are issued in parallel per org, one org per worker.
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg
from psycopg.types.json import Jsonb

from ...domain import ledger as ledger_rules
from ...domain.money import from_minor_units
from ...domain.periods import Period
from ...domain.stripe_invoice import (IssuableInvoice, IssuableLine, InvoiceRejected, StripeRequest,
                                      customer_key, customer_params, plan_invoice)
from ...stores import ledger as ledger_store
from ...stores.postgres import connect, partition_lock_held
from .. import outbox
from .gateway import StripeGateway, StripeRefused, StripeUnavailable

SINK = "STRIPE"
FINALIZED = ("open", "paid", "uncollectible")


class StripeMismatch(Exception):
    """Stripe's invoice does not add up to our draft: it is not finalized."""


@dataclass
class IssueOutcome:
    invoice_id: str
    org_id: str
    currency: str
    status: str  # ISSUED, FAILED or DRY_RUN
    subtotal: Decimal
    reason: str | None = None
    stripe_invoice_id: str | None = None
    requests: int = 0  # dry run: requests recorded


@dataclass
class MonthIssue:
    outcomes: list[IssueOutcome] = field(default_factory=list)
    awaiting_dispute_flow: list[str] = field(default_factory=list)
    seconds: float = 0.0
    calls: int = 0
    retried: int = 0
    throttled: int = 0

    def by_status(self, status: str) -> list[IssueOutcome]:
        return [o for o in self.outcomes if o.status == status]


_INVOICES_SQL = """
SELECT i.invoice_id, i.version, i.contract_id, i.org_id, i.period_start, i.currency, i.subtotal, i.tax,
       i.credits_applied, i.total, c.collection_method, c.days_until_due, c.stripe_tax, i.contract_doc_sha256,
       i.corrects_invoice_id, i.kind = 'INVOICE' AND EXISTS (
           SELECT 1 FROM invoices j WHERE j.contract_id = i.contract_id AND j.period_start = i.period_start
           AND j.kind = 'INVOICE' AND j.version < i.version AND j.status IN ('ISSUING', 'ISSUED', 'PAID')
       ) AS earlier_issued
FROM invoices i JOIN contracts c USING (contract_id)
WHERE i.period_start = %s AND c.region = 'GLOBAL' AND i.status IN ('DRAFT', 'ISSUING') AND i.kind = ANY(%s)
ORDER BY i.org_id, i.invoice_id
"""


def load_issuable(conn: psycopg.Connection, period: Period,
                  kinds: tuple[str, ...] = ("INVOICE",)) -> tuple[list[IssuableInvoice], list[str]]:
    """The month's global drafts of these kinds. A draft for a contract-month already issued in an
    earlier version is left to the dispute flow (credit note or supplementary invoice), never
    re-issued; supplementary invoices are issued like invoices, by that flow."""
    rows = conn.execute(_INVOICES_SQL, (period.start, list(kinds))).fetchall()
    awaiting = [r[0] for r in rows if r[15]]
    rows = [r for r in rows if not r[15]]
    lines: dict[str, list[IssuableLine]] = defaultdict(list)
    for invoice_id, line_no, charge_id, description, amount in conn.execute(
            "SELECT invoice_id, line_no, charge_id, description, amount FROM invoice_lines "
            "WHERE invoice_id = ANY(%s) ORDER BY invoice_id, line_no", ([r[0] for r in rows],)):
        lines[invoice_id].append(IssuableLine(line_no, charge_id, description, Decimal(amount)))
    invoices = [IssuableInvoice(r[0], r[1], r[2], r[3], r[4], r[5].strip(), Decimal(r[6]), Decimal(r[7]), Decimal(r[8]),
                                Decimal(r[9]), tuple(lines[r[0]]), r[10], r[11], r[12], r[13], r[14]) for r in rows]
    return invoices, awaiting


def issue_month(db_url: str, gateway: StripeGateway | None, period: Period, concurrency: int = 8,
                kinds: tuple[str, ...] = ("INVOICE",)) -> MonthIssue:
    """Issue every global draft of the month; ``gateway=None`` is a dry run (outbox only)."""
    with partition_lock_held(db_url, "stripe_invoices", period.start.isoformat()):  # runs of a month take turns
        return _issue_month_in_turn(db_url, gateway, period, concurrency, kinds)


def _issue_month_in_turn(db_url: str, gateway: StripeGateway | None, period: Period, concurrency: int,
                         kinds: tuple[str, ...]) -> MonthIssue:
    started = time.monotonic()
    with connect(db_url) as conn:
        invoices, awaiting = load_issuable(conn, period, kinds)
    by_org: dict[str, list[IssuableInvoice]] = defaultdict(list)
    for inv in invoices:
        by_org[inv.org_id].append(inv)
    result = MonthIssue(awaiting_dispute_flow=awaiting)
    work = _dry_run_org if gateway is None else _issue_org
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="stripe-sink") as pool:
        futures = [pool.submit(work, db_url, gateway, org, batch) for org, batch in sorted(by_org.items())]
        for future in futures:  # an unexpected error (a bug, the database gone) fails the run
            result.outcomes.extend(future.result())
    result.seconds = time.monotonic() - started
    if gateway is not None:
        result.calls, result.retried, result.throttled = gateway.calls, gateway.retried, gateway.throttled
    return result


# --- one org per worker -------------------------------------------------------------------------

def _issue_org(db_url: str, gateway: StripeGateway, org_id: str, invoices: list[IssuableInvoice]) -> list[IssueOutcome]:
    outcomes = []
    with connect(db_url, autocommit=True) as conn:
        try:
            customer_id = ensure_customer(conn, gateway, org_id)
        except (StripeRefused, StripeUnavailable) as exc:
            return [_failed(conn, inv, f"customer {org_id}: {exc}") for inv in invoices]
        for inv in invoices:
            try:
                stripe_invoice_id = issue_invoice(conn, gateway, inv, customer_id)
                outcomes.append(IssueOutcome(inv.invoice_id, inv.org_id, inv.currency, "ISSUED", inv.subtotal,
                                             stripe_invoice_id=stripe_invoice_id))
            except (InvoiceRejected, StripeRefused, StripeUnavailable, StripeMismatch) as exc:
                outcomes.append(_failed(conn, inv, str(exc)))
    return outcomes


def _failed(conn: psycopg.Connection, inv: IssuableInvoice, reason: str) -> IssueOutcome:
    outbox.stop_invoice(conn, inv.invoice_id, reason)
    return IssueOutcome(inv.invoice_id, inv.org_id, inv.currency, "FAILED", inv.subtotal, reason=reason)


def _send(conn: psycopg.Connection, gateway: StripeGateway, request: StripeRequest, invoice_id: str | None) -> dict:
    key = request.idempotency_key
    done = outbox.begin(conn, SINK, invoice_id, key, outbox.payload(request.method, request.path, request.params))
    if done is not None:
        return done.response or {"id": done.external_id}
    try:
        obj = gateway.request(request.method, request.path, request.params, key)
    except StripeRefused as exc:
        outbox.failed(conn, key, str(exc), definitive=True)
        raise
    except StripeUnavailable as exc:
        outbox.failed(conn, key, str(exc), definitive=False)
        raise
    outbox.sent(conn, key, obj.get("id"), _trimmed(obj))
    return obj


def _trimmed(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k != "lines"}


# --- customers ------------------------------------------------------------------------------------

def ensure_customer(conn: psycopg.Connection, gateway: StripeGateway, org_id: str) -> str:
    """The org's Stripe customer: ours on record, else found by metadata, else created; its
    metadata (org id, contract ids) updated when it no longer matches."""
    customer = conn.execute("SELECT legal_name, email, country FROM customers WHERE org_id = %s", (org_id,)).fetchone()
    contract_ids = [r[0] for r in conn.execute(
        "SELECT contract_id FROM contracts WHERE org_id = %s AND region = 'GLOBAL' ORDER BY 1", (org_id,))]
    params = customer_params(org_id, customer[0], customer[1], customer[2], contract_ids)
    known = conn.execute("SELECT customer_id, metadata FROM stripe_customers WHERE org_id = %s", (org_id,)).fetchone()
    if known:
        customer_id, metadata = known
    else:
        escaped = org_id.replace("\\", "\\\\").replace("'", "\\'")
        found = gateway.request("get", "/v1/customers/search", {"query": f"metadata['org_id']:'{escaped}'"})["data"]
        if found:
            oldest = min(found, key=lambda c: (c.get("created", 0), c["id"]))
            customer_id, metadata = oldest["id"], oldest.get("metadata") or {}
            outbox.confirm(conn, customer_key(org_id, "create"), customer_id, "search")  # a create left uncertain
        else:
            created = _send(conn, gateway, StripeRequest("create_customer", "post", "/v1/customers", params,
                                                         customer_key(org_id, "create")), None)
            customer_id, metadata = created["id"], params["metadata"]
        _store_customer(conn, org_id, customer_id, metadata)
    if metadata != params["metadata"]:
        _send(conn, gateway, StripeRequest("update_customer", "post", f"/v1/customers/{customer_id}", params,
                                           customer_key(org_id, "update", params)), None)
        _store_customer(conn, org_id, customer_id, params["metadata"])
    return customer_id


def _store_customer(conn: psycopg.Connection, org_id: str, customer_id: str, metadata: dict) -> None:
    conn.execute("""INSERT INTO stripe_customers (org_id, customer_id, metadata) VALUES (%s, %s, %s)
                    ON CONFLICT (org_id) DO UPDATE SET customer_id = EXCLUDED.customer_id,
                        metadata = EXCLUDED.metadata, synced_at = now()""", (org_id, customer_id, Jsonb(metadata)))


# --- one invoice ----------------------------------------------------------------------------------

def issue_invoice(conn: psycopg.Connection, gateway: StripeGateway, inv: IssuableInvoice, customer_id: str) -> str:
    draft_plan = plan_invoice(inv, customer_id, "{stripe_invoice}")  # refuses before anything is sent
    conn.execute("""UPDATE invoices SET status = 'ISSUING', sink = %s, external_customer_id = %s
                    WHERE invoice_id = %s AND status IN ('DRAFT', 'ISSUING')""", (SINK, customer_id, inv.invoice_id))

    create_key = draft_plan.create.idempotency_key
    earlier = outbox.rows(conn, [create_key]).get(create_key)
    stripe_invoice_id = earlier.external_id if earlier and earlier.status == "SENT" else None
    if stripe_invoice_id is None and earlier and earlier.status == "PENDING":
        stripe_invoice_id = _find_invoice(gateway, customer_id, inv.invoice_id)
        if stripe_invoice_id:
            outbox.sent(conn, create_key, stripe_invoice_id, {"id": stripe_invoice_id, "found_by": "lookup"})
    if stripe_invoice_id is None:
        stripe_invoice_id = _send(conn, gateway, draft_plan.create, inv.invoice_id)["id"]

    plan = plan_invoice(inv, customer_id, stripe_invoice_id)
    writes = list(plan.items) + ([plan.credit] if plan.credit else [])
    state = outbox.rows(conn, [w.idempotency_key for w in writes])
    if any(r.status == "PENDING" for r in state.values()):
        for key, object_id in _found_writes(gateway, customer_id, stripe_invoice_id, inv, plan).items():
            outbox.sent(conn, key, object_id, {"id": object_id, "found_by": "lookup"})
        state = outbox.rows(conn, [w.idempotency_key for w in writes])
    for write in writes:
        if state.get(write.idempotency_key) is None or state[write.idempotency_key].status != "SENT":
            _send(conn, gateway, write, inv.invoice_id)

    current = gateway.request("get", f"/v1/invoices/{stripe_invoice_id}")
    if current["status"] == "draft":
        if current["subtotal"] != plan.subtotal_minor or current["currency"] != inv.currency.lower():
            raise StripeMismatch(
                f"invoice {inv.invoice_id}: Stripe draft {stripe_invoice_id} has subtotal {current['subtotal']} "
                f"{current['currency']}, ours is {plan.subtotal_minor} {inv.currency.lower()} (minor units); "
                "not finalized")
        current = _send(conn, gateway, plan.finalize, inv.invoice_id)
    elif current["status"] not in FINALIZED:
        raise StripeMismatch(f"invoice {inv.invoice_id}: Stripe invoice {stripe_invoice_id} is {current['status']}")
    else:  # finalized by an earlier attempt whose answer was lost
        outbox.confirm(conn, plan.finalize.idempotency_key, stripe_invoice_id, "invoice already finalized")
    record_issued(conn, inv.invoice_id, current)
    return stripe_invoice_id


def _find_invoice(gateway: StripeGateway, customer_id: str, invoice_id: str) -> str | None:
    """Our invoice among the customer's Stripe invoices (a list, not search: lists are consistent)."""
    for obj in gateway.list_all("/v1/invoices", {"customer": customer_id}):
        if (obj.get("metadata") or {}).get("invoice_id") == invoice_id and obj["status"] != "void":
            return obj["id"]
    return None


def _found_writes(gateway: StripeGateway, customer_id: str, stripe_invoice_id: str, inv: IssuableInvoice,
                  plan) -> dict[str, str]:
    """Items (and the credit) already on Stripe for writes left uncertain, by idempotency key."""
    by_line = {w.params["metadata"]["line_nos"]: w.idempotency_key for w in plan.items}
    found = {}
    for item in gateway.list_all("/v1/invoiceitems", {"invoice": stripe_invoice_id}):
        key = by_line.get((item.get("metadata") or {}).get("line_nos"))
        if key:
            found[key] = item["id"]
    if plan.credit:
        for tx in gateway.list_all(f"/v1/customers/{customer_id}/balance_transactions"):
            if (tx.get("metadata") or {}).get("invoice_id") == inv.invoice_id:
                found[plan.credit.idempotency_key] = tx["id"]
    return found


def _money(minor: int | None, currency: str) -> Decimal | None:
    return None if minor is None else from_minor_units(minor, currency)


def record_issued(conn: psycopg.Connection, invoice_id: str, obj: dict) -> bool:
    """ISSUING -> ISSUED with Stripe's ids and figures, and the ledger's INVOICE_ISSUED (plus
    CREDIT_CONSUMED), in one transaction. Called by the sink and by the invoice.finalized event;
    whichever comes second finds the invoice ISSUED and does nothing."""
    with conn.transaction():
        row = conn.execute("SELECT org_id, currency, subtotal, credits_applied, status, kind, corrects_invoice_id "
                           "FROM invoices WHERE invoice_id = %s FOR UPDATE", (invoice_id,)).fetchone()
        if row is None or row[4] != "ISSUING":
            return False
        org_id, currency, subtotal, credits = row[0], row[1].strip(), Decimal(row[2]), Decimal(row[3])
        tax = _money(obj.get("tax") or 0, currency)
        conn.execute(
            """UPDATE invoices SET status = 'ISSUED', sink = %s, external_id = %s, external_customer_id = %s,
                   external_number = %s, hosted_url = %s, pdf_url = %s, external_status = %s,
                   external_subtotal = %s, external_tax = %s, external_total = %s, external_amount_due = %s,
                   issued_at = now(), sink_error = NULL, sink_error_at = NULL
               WHERE invoice_id = %s""",
            (SINK, obj["id"], obj.get("customer"), obj.get("number"), obj.get("hosted_invoice_url"),
             obj.get("invoice_pdf"), obj.get("status"), _money(obj.get("subtotal"), currency), tax,
             _money(obj.get("total"), currency), _money(obj.get("amount_due"), currency), invoice_id))
        transactions = [ledger_rules.document_issued(row[5], invoice_id, org_id, currency, subtotal, tax, row[6])]
        if credits:
            transactions.append(ledger_rules.credit_consumed(invoice_id, org_id, currency, credits))
        ledger_store.append(conn, transactions)
    return True


# --- dry run --------------------------------------------------------------------------------------

def _dry_run_org(db_url: str, _gateway, org_id: str, invoices: list[IssuableInvoice]) -> list[IssueOutcome]:
    """The exact writes a live run would send, with placeholders for ids Stripe would assign."""
    outcomes = []
    with connect(db_url, autocommit=True) as conn:
        customer = conn.execute("SELECT legal_name, email, country FROM customers WHERE org_id = %s",
                                (org_id,)).fetchone()
        contract_ids = [r[0] for r in conn.execute(
            "SELECT contract_id FROM contracts WHERE org_id = %s AND region = 'GLOBAL' ORDER BY 1", (org_id,))]
        known = conn.execute("SELECT customer_id FROM stripe_customers WHERE org_id = %s", (org_id,)).fetchone()
        customer_id = known[0] if known else f"{{stripe_customer:{org_id}}}"
        if not known:
            params = customer_params(org_id, customer[0], customer[1], customer[2], contract_ids)
            outbox.record_dry_run(conn, SINK, None, [(customer_key(org_id, "create"),
                                                      outbox.payload("post", "/v1/customers", params))])
        for inv in invoices:
            try:
                plan = plan_invoice(inv, customer_id, f"{{stripe_invoice:{inv.invoice_id}}}")
            except InvoiceRejected as exc:
                outcomes.append(_failed(conn, inv, str(exc)))
                continue
            writes = [plan.create, *plan.items, *([plan.credit] if plan.credit else []), plan.finalize]
            count = outbox.record_dry_run(conn, SINK, inv.invoice_id, [
                (w.idempotency_key, outbox.payload(w.method, w.path, w.params)) for w in writes])
            conn.execute("UPDATE invoices SET sink_error = NULL, sink_error_at = NULL WHERE invoice_id = %s",
                         (inv.invoice_id,))
            outcomes.append(IssueOutcome(inv.invoice_id, inv.org_id, inv.currency, "DRY_RUN", inv.subtotal,
                                         requests=count))
    return outcomes
