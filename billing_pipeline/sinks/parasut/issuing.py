"""Issue a month's Turkish invoices through Parasut, once per contract-month.

Per invoice: contact found by tax number or created; sales invoice in TRL (its description holds
our invoice id); e-Fatura when the customer has an e-invoice inbox, else e-Arsiv; the trackable
job polled; the PDF downloaded once ready, stored in S3 and hashed. Parasut has no idempotency
keys, so every write goes through the outbox first, and after an uncertain failure (a PENDING
row) the sink looks up what Parasut holds for our reference before creating anything again.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg

from ...domain import ledger as ledger_rules
from ...domain.parasut_invoice import (InvoiceRejected, TurkishInvoice, TurkishLine, appendix_document,
                                       check_issuable, contact_attributes, net_of_discounts,
                                       sales_invoice_body)
from ...domain.periods import Period
from ...stores import ledger as ledger_store
from ...stores.postgres import connect, partition_lock_held
from .. import outbox
from .appendix import appendix_pdf
from .client import ParasutClient, ParasutRefused, ParasutUnavailable, dumps

SINK = "PARASUT"


class StillPending(Exception):
    """Parasut has not finished (a job still running, a PDF not ready): a re-run resumes."""


@dataclass
class IssueOutcome:
    invoice_id: str
    status: str  # ISSUED, FAILED, DRY_RUN
    total: Decimal
    reason: str | None = None
    kind: str | None = None
    requests: int = 0


@dataclass
class MonthIssue:
    outcomes: list[IssueOutcome] = field(default_factory=list)
    awaiting_dispute_flow: list[str] = field(default_factory=list)
    pdfs_fetched: int = 0
    seconds: float = 0.0

    def by_status(self, status: str) -> list[IssueOutcome]:
        return [o for o in self.outcomes if o.status == status]


@dataclass
class PollPolicy:
    job_polls: int = 10
    pdf_polls: int = 10
    interval: float = 2.0


_INVOICES_SQL = """
SELECT i.invoice_id, i.contract_id, c.contract_type, i.org_id, cu.legal_name, cu.tax_id, cu.tax_office, cu.email,
       cu.address, i.currency, i.period_start, coalesce(i.issue_date, i.period_end), c.days_until_due, i.tax_rate,
       i.subtotal, i.tax, i.total, i.contract_doc_sha256,
       CASE WHEN i.currency <> 'TRY' THEN i.sink_error END AS problem, i.corrects_invoice_id,
       i.kind = 'INVOICE' AND EXISTS (
           SELECT 1 FROM invoices j WHERE j.contract_id = i.contract_id AND j.period_start = i.period_start
           AND j.kind = 'INVOICE' AND j.version < i.version AND j.status IN ('ISSUING', 'ISSUED', 'PAID')
       ) AS earlier_issued, i.credits_applied, coalesce(i.fx_estimated, false), c.e_document_scenario
FROM invoices i JOIN contracts c USING (contract_id) JOIN customers cu ON cu.org_id = i.org_id
WHERE i.period_start = %s AND c.region = 'TR' AND i.status IN ('DRAFT', 'ISSUING') AND i.kind = ANY(%s)
ORDER BY i.invoice_id
"""


def load_issuable(conn: psycopg.Connection, period: Period,
                  kinds: tuple[str, ...] = ("INVOICE",)) -> tuple[list[TurkishInvoice], list[str]]:
    rows = conn.execute(_INVOICES_SQL, (period.start, list(kinds))).fetchall()
    awaiting = [r[0] for r in rows if r[20]]
    rows = [r for r in rows if not r[20]]
    lines: dict[str, list[TurkishLine]] = defaultdict(list)
    for invoice_id, line_no, description, amount, vat, share in conn.execute(
            "SELECT invoice_id, line_no, description, amount, coalesce(vat_amount, 0), coalesce(discount_share, 0) "
            "FROM invoice_lines WHERE invoice_id = ANY(%s) ORDER BY invoice_id, line_no", ([r[0] for r in rows],)):
        lines[invoice_id].append(TurkishLine(line_no, description, Decimal(amount), Decimal(vat), Decimal(share)))
    invoices = [TurkishInvoice(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9].strip(), r[10], r[11],
                               r[12], Decimal(r[13]), Decimal(r[14]), Decimal(r[15]), Decimal(r[16]),
                               tuple(lines[r[0]]), r[17], r[18], r[19], Decimal(r[21]), r[22], r[23]) for r in rows]
    return invoices, awaiting


def issue_month(db_url: str, client: ParasutClient | None, period: Period, storage=None, workers: int = 4,
                polls: PollPolicy = PollPolicy(), kinds: tuple[str, ...] = ("INVOICE",)) -> MonthIssue:
    """Issue the month's Turkish drafts; ``client=None`` is a dry run. ``storage`` keeps PDFs and
    appendices: an object with ``put(key, data) -> location`` (S3 with Object Lock)."""
    with partition_lock_held(db_url, "parasut_invoices", period.start.isoformat()):  # runs of a month take turns
        return _issue_month_in_turn(db_url, client, period, storage, workers, polls, kinds)


def _issue_month_in_turn(db_url: str, client: ParasutClient | None, period: Period, storage, workers: int,
                         polls: PollPolicy, kinds: tuple[str, ...]) -> MonthIssue:
    started = time.monotonic()
    with connect(db_url) as conn:
        invoices, awaiting = load_issuable(conn, period, kinds)
    result = MonthIssue(awaiting_dispute_flow=awaiting)
    if client is None:
        with connect(db_url, autocommit=True) as conn:
            result.outcomes = [_dry_run(conn, inv) for inv in invoices]
        result.seconds = time.monotonic() - started
        return result
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="parasut-sink") as pool:
        futures = [pool.submit(_issue_one, db_url, client, inv, storage, polls) for inv in invoices]
        result.outcomes = [f.result() for f in futures]
        result.pdfs_fetched = sum(pool.map(lambda invoice_id: _fetch_pdf(db_url, client, invoice_id, storage, polls),
                                           _issued_without_pdf(db_url, period)))
    result.seconds = time.monotonic() - started
    return result


def _issue_one(db_url: str, client: ParasutClient, inv: TurkishInvoice, storage, polls: PollPolicy) -> IssueOutcome:
    with connect(db_url, autocommit=True) as conn:
        try:
            kind = issue_invoice(conn, client, inv, storage, polls)
            return IssueOutcome(inv.invoice_id, "ISSUED", inv.total, kind=kind)
        except (InvoiceRejected, ParasutRefused, ParasutUnavailable, StillPending) as exc:
            return _failed(conn, inv.invoice_id, inv.total, str(exc))


def _failed(conn: psycopg.Connection, invoice_id: str, total: Decimal, reason: str) -> IssueOutcome:
    outbox.stop_invoice(conn, invoice_id, reason)
    return IssueOutcome(invoice_id, "FAILED", total, reason=reason)


WRITE_ATTEMPTS = 4


def _send(conn, client: ParasutClient, key: str, invoice_id: str | None, path: str, body: dict,
          lookup=None) -> tuple[str, str]:
    """POST through the outbox; returns (id, how): how is "created", "recorded" (sent before) or
    "found" (``lookup`` found what an uncertain earlier attempt made). Parasut has no idempotency
    keys: after any uncertain attempt the lookup runs before the request is sent again, and a
    refusal that follows an uncertain attempt is checked the same way (it may mean "done")."""
    uncertain = False
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        earlier = outbox.rows(conn, [key]).get(key)
        if earlier and earlier.status == "SENT":
            return earlier.external_id, "recorded"
        uncertain = uncertain or bool(earlier and earlier.status == "PENDING")
        if uncertain and lookup is not None:
            found = lookup(False)
            if found:
                outbox.sent(conn, key, found, {"id": found, "found_by": "lookup"})
                return found, "found"
        outbox.begin(conn, SINK, invoice_id, key, outbox.payload("post", path, json.loads(_json(body))))
        try:
            answer = client.request("POST", path, body=body)
        except ParasutRefused as exc:
            if not (uncertain and lookup is not None):
                outbox.failed(conn, key, str(exc), definitive=True)
                raise
            found = lookup(True)
            if found:
                outbox.sent(conn, key, found, {"id": found, "found_by": "lookup after refusal"})
                return found, "found"
            outbox.failed(conn, key, str(exc), definitive=False)  # still uncertain: look again next time
            raise StillPending(f"{path} for {invoice_id}: an earlier attempt may still be in progress and Parasut "
                               f"refused another ({exc}); a re-run resumes it") from None
        except ParasutUnavailable as exc:
            outbox.failed(conn, key, str(exc), definitive=False)
            uncertain = True
            if attempt == WRITE_ATTEMPTS:
                raise
            time.sleep(min(5.0, client.base_delay * 2 ** (attempt - 1)))
            continue
        created = answer["data"]["id"]
        outbox.sent(conn, key, created, json.loads(_json(answer["data"])))
        return created, "created"
    raise AssertionError("unreachable")


def _mentions(description: str, invoice_id: str) -> bool:
    return re.search(rf"Ref: {re.escape(invoice_id)}( \||$)", description) is not None


def _json(obj) -> str:
    return dumps(obj).decode()


def ensure_contact(conn, client: ParasutClient, inv: TurkishInvoice) -> str:
    known = conn.execute("SELECT contact_id FROM parasut_contacts WHERE org_id = %s AND tax_number = %s",
                         (inv.org_id, inv.tax_number.strip())).fetchone()
    if known:
        return known[0]

    def by_tax_number(_wait: bool = False) -> str | None:
        found = client.request("GET", "/contacts", params={"filter[tax_number]": inv.tax_number.strip()})["data"]
        return found[0]["id"] if found else None

    key = f"parasut:contact:{inv.org_id}:{inv.tax_number.strip()}"
    contact_id = by_tax_number()
    if contact_id:
        outbox.confirm(conn, key, contact_id, "tax number")  # a create an earlier run left uncertain
    else:
        contact_id = _send(conn, client, key, None, "/contacts",
                           {"data": {"type": "contacts", "attributes": contact_attributes(inv)}},
                           lookup=by_tax_number)[0]
    conn.execute("""INSERT INTO parasut_contacts (org_id, contact_id, tax_number) VALUES (%s, %s, %s)
                    ON CONFLICT (org_id) DO UPDATE SET contact_id = EXCLUDED.contact_id,
                        tax_number = EXCLUDED.tax_number, synced_at = now()""",
                 (inv.org_id, contact_id, inv.tax_number.strip()))
    return contact_id


def _store_appendix(inv: TurkishInvoice, storage) -> str:
    """JSON and PDF of a fixed invoice's usage, stored once; returns 'location sha256:<pdf hash>'."""
    document = appendix_document(inv)
    data = json.dumps(document, indent=2, sort_keys=True).encode()
    pdf = appendix_pdf(document)
    prefix = f"invoices/{inv.period_label}/{inv.invoice_id.replace(':', '_')}"
    if storage is None:
        return f"{prefix}-usage.pdf sha256:{hashlib.sha256(pdf).hexdigest()} (not stored: dry run)"
    storage.put(f"{prefix}-usage.json", data)
    location = storage.put(f"{prefix}-usage.pdf", pdf)
    return f"{location} sha256:{hashlib.sha256(pdf).hexdigest()}"


def issue_invoice(conn, client: ParasutClient, inv: TurkishInvoice, storage, polls: PollPolicy) -> str:
    check_issuable(inv)
    contact_id = ensure_contact(conn, client, inv)
    conn.execute("UPDATE invoices SET status = 'ISSUING', sink = %s, external_customer_id = %s "
                 "WHERE invoice_id = %s AND status IN ('DRAFT', 'ISSUING')", (SINK, contact_id, inv.invoice_id))
    appendix = None
    if inv.contract_type == "FIXED" and inv.corrects is None:
        appendix = _store_appendix(inv, storage)
        conn.execute("UPDATE invoices SET appendix_location = %s WHERE invoice_id = %s", (appendix, inv.invoice_id))
    body = sales_invoice_body(inv, contact_id, appendix)

    def by_reference(_wait: bool = False) -> str | None:
        found = client.request("GET", "/sales_invoices", params={
            "filter[contact_id]": contact_id, "filter[issue_date]": inv.issue_date.isoformat()})["data"]
        ours = [s for s in found if _mentions(s["attributes"].get("description") or "", inv.invoice_id)]
        return ours[0]["id"] if ours else None

    sales_invoice_id, how = _send(conn, client, f"parasut:{inv.invoice_id}:sales_invoice", inv.invoice_id,
                                  "/sales_invoices", body, lookup=by_reference)

    # a sales invoice made just now has no e-document; one made before may (a re-run, a crash)
    document = None if how == "created" else _active_document(client, sales_invoice_id)
    if document is not None:  # made by an earlier run, perhaps one whose answer was lost
        outbox.confirm(conn, f"parasut:{inv.invoice_id}:e_document", f"{document['type']}:{document['id']}",
                       "linked to the sales invoice")
    else:
        inboxes = client.request("GET", "/e_invoice_inboxes", params={"filter[vkn]": inv.tax_number.strip()})["data"]
        if inboxes:
            path, relation = "/e_invoices", "invoice"
            attributes = {"scenario": inv.e_document_scenario, "to": inboxes[0]["attributes"]["e_invoice_address"]}
        else:
            path, relation = "/e_archives", "sales_invoice"
            attributes = {}
        e_body = {"data": {"type": path.strip("/"), "attributes": attributes, "relationships": {
            relation: {"data": {"id": sales_invoice_id, "type": "sales_invoices"}}}}}

        def made_already(wait: bool) -> str | None:
            """An e-document an uncertain attempt started: Parasut links it once its job is done, and
            refuses a second one meanwhile; after such a refusal, wait for the link."""
            for _ in range(polls.job_polls if wait else 1):
                linked = _active_document(client, sales_invoice_id)
                if linked:
                    return f"{linked['type']}:{linked['id']}"
                if wait:
                    time.sleep(polls.interval)
            return None

        made, how = _send(conn, client, f"parasut:{inv.invoice_id}:e_document", inv.invoice_id, path, e_body,
                          lookup=made_already)
        if how == "found" or made.startswith(("e_invoices:", "e_archives:")):
            kind_name, _, document_id = made.partition(":")
            document = {"type": kind_name, "id": document_id}
        else:
            document = _wait_for_document(client, made, sales_invoice_id, polls)
    kind = "E_FATURA" if document["type"] == "e_invoices" else "E_ARSIV"
    attributes = document.get("invoice_attributes") or client.request(
        "GET", f"/sales_invoices/{sales_invoice_id}")["data"]["attributes"]
    record_issued(conn, inv.invoice_id, sales_invoice_id, attributes, kind, document["id"])
    return kind


def _active_document(client: ParasutClient, sales_invoice_id: str) -> dict | None:
    """The e-document linked to the sales invoice, with the invoice's own attributes (its totals)."""
    current = client.request("GET", f"/sales_invoices/{sales_invoice_id}", params={"include": "active_e_document"})
    linked = (current["data"].get("relationships", {}).get("active_e_document") or {}).get("data")
    return None if linked is None else {**linked, "invoice_attributes": current["data"]["attributes"]}


def _wait_for_document(client: ParasutClient, job_id: str, sales_invoice_id: str, polls: PollPolicy) -> dict:
    for _ in range(polls.job_polls):
        job = client.request("GET", f"/trackable_jobs/{job_id}")
        status = job["data"]["attributes"].get("status")
        if status == "done":
            document = _active_document(client, sales_invoice_id)
            if document:
                return document
        if status == "error":
            errors = job["data"]["attributes"].get("errors")
            raise ParasutRefused("GET", f"/trackable_jobs/{job_id}", 422, f"e-document job failed: {errors}")
        time.sleep(polls.interval)
    raise StillPending(f"e-document job {job_id} for sales invoice {sales_invoice_id} still running after "
                       f"{polls.job_polls} polls; a re-run resumes it")


def record_issued(conn, invoice_id: str, sales_invoice_id: str, attributes: dict, kind: str, document_id: str) -> bool:
    with conn.transaction():
        row = conn.execute("SELECT org_id, currency, subtotal, tax, status, kind, corrects_invoice_id FROM invoices "
                           "WHERE invoice_id = %s FOR UPDATE", (invoice_id,)).fetchone()
        if row is None or row[4] != "ISSUING":
            return False
        conn.execute(
            """UPDATE invoices SET status = 'ISSUED', sink = %s, external_id = %s, external_number = %s,
                   external_status = %s, external_subtotal = %s, external_tax = %s, external_total = %s,
                   e_document_kind = %s, e_document_id = %s, issued_at = now(), sink_error = NULL,
                   sink_error_at = NULL WHERE invoice_id = %s""",
            (SINK, sales_invoice_id, attributes.get("invoice_no"), attributes.get("payment_status"),
             net_of_discounts(attributes), _dec(attributes.get("total_vat")), _dec(attributes.get("net_total")),
             kind, document_id, invoice_id))
        ledger_store.append(conn, [ledger_rules.document_issued(row[5], invoice_id, row[0], row[1].strip(),
                                                                Decimal(row[2]), Decimal(row[3]), row[6])])
    return True


def _dec(value) -> Decimal | None:
    return None if value is None else Decimal(str(value))


# --- PDFs -----------------------------------------------------------------------------------------

def _issued_without_pdf(db_url: str, period: Period) -> list[str]:
    with connect(db_url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT invoice_id FROM invoices WHERE period_start = %s AND sink = %s AND status IN ('ISSUED', 'PAID') "
            "AND kind <> 'CREDIT_NOTE' "
            "AND pdf_sha256 IS NULL ORDER BY 1", (period.start, SINK))]


def _fetch_pdf(db_url: str, client: ParasutClient, invoice_id: str, storage, polls: PollPolicy) -> int:
    """Download the e-document PDF once ready (204 until then), store it, hash it. 1 when stored."""
    with connect(db_url, autocommit=True) as conn:
        kind, document_id, period_start = conn.execute(
            "SELECT e_document_kind, e_document_id, period_start FROM invoices WHERE invoice_id = %s",
            (invoice_id,)).fetchone()
        path = f"/{'e_invoices' if kind == 'E_FATURA' else 'e_archives'}/{document_id}/pdf"
        try:
            for _ in range(polls.pdf_polls):
                answer = client.request("GET", path)
                if answer is not None:
                    break
                time.sleep(polls.interval)
            else:
                conn.execute("UPDATE invoices SET sink_error = %s, sink_error_at = now() WHERE invoice_id = %s",
                             (f"PDF of {path} not ready after {polls.pdf_polls} polls; a re-run fetches it",
                              invoice_id))
                return 0
            pdf = client.download(answer["data"]["attributes"]["url"])  # the link expires in an hour: use it now
            # an e-Arsiv's legal number (e.g. PRS2026000000032): its document's, given once signed (the
            # sales invoice's invoice_no stays empty); the Swagger gives an e-Fatura document none, so
            # it is not asked (one request of about ten per invoice, at 10 requests per 10 s)
            number = None if kind == "E_FATURA" else client.request(
                "GET", path.removesuffix("/pdf"))["data"]["attributes"].get("invoice_number")
        except (ParasutRefused, ParasutUnavailable) as exc:
            conn.execute("UPDATE invoices SET sink_error = %s, sink_error_at = now() WHERE invoice_id = %s",
                         (f"PDF: {exc}", invoice_id))
            return 0
        digest = hashlib.sha256(pdf).hexdigest()
        key = f"invoices/{period_start:%Y-%m}/{invoice_id.replace(':', '_')}.pdf"
        location = storage.put(key, pdf) if storage is not None else None
        conn.execute("UPDATE invoices SET pdf_sha256 = %s, pdf_location = %s, sink_error = NULL, sink_error_at = NULL, "
                     "external_number = coalesce(%s, external_number) WHERE invoice_id = %s",
                     (digest, location, None if number is None else str(number), invoice_id))
        return 1


# --- dry run --------------------------------------------------------------------------------------

def _dry_run(conn, inv: TurkishInvoice) -> IssueOutcome:
    try:
        check_issuable(inv)
        appendix = _store_appendix(inv, None) if inv.contract_type == "FIXED" and inv.corrects is None else None
        body = sales_invoice_body(inv, "{parasut_contact:" + inv.tax_number.strip() + "}", appendix)
    except InvoiceRejected as exc:
        return _failed(conn, inv.invoice_id, inv.total, str(exc))
    requests = [(f"parasut:contact:{inv.org_id}:{inv.tax_number.strip()}",
                 outbox.payload("post", "/contacts", {"data": {"type": "contacts",
                                                               "attributes": contact_attributes(inv)}})),
                (f"parasut:{inv.invoice_id}:sales_invoice",
                 outbox.payload("post", "/sales_invoices", json.loads(_json(body))))]
    count = outbox.record_dry_run(conn, SINK, inv.invoice_id, requests)
    conn.execute("UPDATE invoices SET sink_error = NULL, sink_error_at = NULL WHERE invoice_id = %s", (inv.invoice_id,))
    return IssueOutcome(inv.invoice_id, "DRY_RUN", inv.total, requests=count)
