"""Writing and verifying the hash-chained ledger in PostgreSQL."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

import psycopg

from ..domain.ledger import GENESIS, LedgerEntry, LedgerTransaction, entry_hash

WRITER_ROLE = "billing_ledger_writer"
LEDGER_LOCK = 0x6C656467  # "ledg"


def append(conn: psycopg.Connection, transactions: list[LedgerTransaction]) -> list[LedgerEntry]:
    """Append transactions at the head of the chain, inside the caller's transaction.

    The writes run as the writer role, which can only read and insert. An advisory lock held to the
    end of the transaction serialises writers (readers are not blocked), so each entry links to
    the true head; the UNIQUE(prev_hash) constraint refuses a fork even from a writer that skipped
    the lock.
    """
    entries: list[LedgerEntry] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LEDGER_LOCK,))
        conn.execute(f"SET LOCAL ROLE {WRITER_ROLE}")
        head = conn.execute("SELECT hash FROM ledger ORDER BY entry_id DESC LIMIT 1").fetchone()
        prev = head[0] if head else GENESIS
        count = sum(len(t.postings) for t in transactions)
        ids = [r[0] for r in conn.execute("SELECT nextval('ledger_entry_id_seq') FROM generate_series(1, %s)",
                                          (count,))]
        now = datetime.now(timezone.utc)
        for tx in transactions:
            for posting in tx.postings:
                entry = LedgerEntry(ids[len(entries)], tx.tx_id, tx.kind, tx.entity_type, tx.entity_id,
                                    posting.account, posting.amount, posting.currency, now, prev)
                entry = LedgerEntry(**{**entry.__dict__, "hash": entry_hash(entry)})
                entries.append(entry)
                prev = entry.hash
        with conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO ledger (entry_id, tx_id, event, entity_type, entity_id, account, amount, currency,
                       created_at, prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                [(e.entry_id, e.tx_id, e.kind, e.entity_type, e.entity_id, e.account, e.amount, e.currency,
                  e.created_at, e.prev_hash, e.hash) for e in entries])
        conn.execute("RESET ROLE")
    return entries


@dataclass(frozen=True)
class Verification:
    entries: int
    transactions: int
    head: str
    first_error: str | None

    @property
    def ok(self) -> bool:
        return self.first_error is None


def verify(conn: psycopg.Connection) -> Verification:
    """Recompute every hash and link in chain order, and every transaction's balance."""
    prev = GENESIS
    count = 0
    balances: dict[tuple[uuid.UUID, str], Decimal] = defaultdict(Decimal)
    first_entry: dict[uuid.UUID, int] = {}
    error = None
    with conn.cursor(name="ledger_verify") as cur:  # server-side cursor: any ledger size
        cur.execute("""SELECT entry_id, tx_id, event, entity_type, entity_id, account, amount, currency, created_at,
                              prev_hash, hash FROM ledger ORDER BY entry_id""")
        for row in cur:
            count += 1
            entry = LedgerEntry(*row)
            if error is None:
                if entry.prev_hash != prev:
                    error = (f"entry {entry.entry_id}: prev_hash {entry.prev_hash[:12]}... does not match the hash of "
                             f"the entry before it ({prev[:12]}...): an entry was removed, inserted or moved")
                elif entry_hash(entry) != entry.hash:
                    error = (f"entry {entry.entry_id}: stored hash {entry.hash[:12]}... differs from the hash of its "
                             f"contents {entry_hash(entry)[:12]}...: the entry was edited")
            prev = entry.hash
            balances[(entry.tx_id, entry.currency)] += entry.amount
            first_entry.setdefault(entry.tx_id, entry.entry_id)
    if error is None:
        for (tx_id, currency), total in balances.items():
            if total != 0:
                error = (f"entry {first_entry[tx_id]}: transaction {tx_id} does not balance in {currency} "
                         f"({total} left over)")
                break
    return Verification(count, len(first_entry), prev, error)


# The transactions that record a document's issue (an invoice, a supplementary invoice, a credit note).
ISSUE_EVENTS = ["INVOICE_ISSUED", "SUPPLEMENTARY_ISSUED", "CREDIT_NOTE"]

_DOCUMENTS_AGAINST_LEDGER = """
WITH issue AS (
    SELECT entity_id AS invoice_id, count(DISTINCT tx_id) AS transactions, min(currency) AS currency,
           coalesce(sum(amount) FILTER (WHERE account LIKE 'receivable:%%'), 0) AS receivable,
           coalesce(-sum(amount) FILTER (WHERE account = 'revenue'), 0) AS subtotal,
           coalesce(-sum(amount) FILTER (WHERE account = 'tax_payable'), 0) AS tax
    FROM ledger WHERE event = ANY(%(events)s) GROUP BY entity_id),
consumed AS (
    SELECT entity_id AS invoice_id, sum(amount) AS credits FROM ledger
    WHERE event = 'CREDIT_CONSUMED' AND account LIKE 'prepaid_credit:%%' GROUP BY entity_id),
compared AS (
    SELECT coalesce(d.invoice_id, l.invoice_id) AS invoice_id, d.status, trim(d.currency) AS currency, d.subtotal,
           -- a Stripe document's tax is Stripe's (Stripe Tax computes it at issue; ours is 0), as the ledger took it
           CASE WHEN d.sink = 'STRIPE' AND d.tax = 0 THEN coalesce(d.external_tax, 0) ELSE d.tax END, d.credits_applied, d.sink, l.invoice_id IS NOT NULL AS recorded, l.transactions,
           l.currency AS ledger_currency, l.receivable, l.subtotal AS ledger_subtotal, l.tax AS ledger_tax,
           coalesce(c.credits, 0) AS ledger_credits
    FROM invoices d FULL JOIN issue l ON l.invoice_id = d.invoice_id
    LEFT JOIN consumed c ON c.invoice_id = coalesce(d.invoice_id, l.invoice_id)
    WHERE d.status IN ('ISSUED', 'PAID', 'VOID') OR l.invoice_id IS NOT NULL)
SELECT * FROM compared
WHERE NOT recorded OR status IS NULL OR status IN ('DRAFT', 'ISSUING', 'SUPERSEDED') OR transactions <> 1
   OR currency <> ledger_currency OR subtotal <> ledger_subtotal OR tax <> ledger_tax
   OR receivable <> ledger_subtotal + ledger_tax OR (sink = 'STRIPE' AND credits_applied <> ledger_credits)
ORDER BY invoice_id
"""


@dataclass(frozen=True)
class DocumentCheck:
    documents: int  # issued documents and ledger issue records compared
    problems: list[str]  # one line per document, naming it


def documents_against_ledger(conn: psycopg.Connection) -> DocumentCheck:
    """Every issued document (ISSUED, PAID or VOID) against the ledger's record of its issue: exactly
    one issue transaction, in its currency, for its subtotal and tax (receivable = subtotal + tax),
    and for a Stripe invoice the prepaid credit it consumed; and no issue recorded for a document
    that was never issued, or that is gone. The chain (verify) proves the ledger was not edited;
    this proves the invoices were not edited after the ledger recorded them, and that no issue
    was cut off the ledger's end (the chain alone cannot tell a shorter ledger from an older one)."""
    rows = conn.execute(_DOCUMENTS_AGAINST_LEDGER, {"events": ISSUE_EVENTS}).fetchall()
    compared = conn.execute(
        """SELECT count(*) FROM (SELECT invoice_id FROM invoices WHERE status IN ('ISSUED', 'PAID', 'VOID')
                                 UNION SELECT entity_id FROM ledger WHERE event = ANY(%s)) d""",
        (ISSUE_EVENTS,)).fetchone()[0]
    return DocumentCheck(compared, [_document_problem(*row) for row in rows])


def _document_problem(invoice_id, status, currency, subtotal, tax, credits, sink, recorded, transactions,
                      ledger_currency, receivable, ledger_subtotal, ledger_tax, ledger_credits) -> str:
    if not recorded:
        return f"invoice {invoice_id} is {status}, but the ledger records no issue of it (entries cut off the end?)"
    if status is None:
        return f"invoice {invoice_id}: the ledger records its issue, but there is no such invoice"
    if status in ("DRAFT", "ISSUING", "SUPERSEDED"):
        return f"invoice {invoice_id} is {status}, but the ledger records its issue"
    if transactions != 1:
        return f"invoice {invoice_id}: the ledger records its issue {transactions} times"
    if receivable != ledger_subtotal + ledger_tax:
        return (f"invoice {invoice_id}: the ledger's receivable {receivable} {ledger_currency} is not its subtotal "
                f"{ledger_subtotal} plus tax {ledger_tax}")
    if (currency, subtotal, tax) != (ledger_currency, ledger_subtotal, ledger_tax):
        return (f"invoice {invoice_id}: subtotal {subtotal} and tax {tax} {currency}, but the ledger recorded its "
                f"issue at {ledger_subtotal} and {ledger_tax} {ledger_currency}")
    return (f"invoice {invoice_id}: {credits} {currency} of prepaid credit applied, but the ledger recorded "
            f"{ledger_credits} consumed")
