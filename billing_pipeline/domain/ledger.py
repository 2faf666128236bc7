"""The audit ledger's rules: double-entry transactions and the hash chain over them.

Sign convention: debits are positive, credits negative; every transaction sums to zero per
currency. Accounts: receivable:<org>, revenue, tax_payable, cash, prepaid_credit:<org>,
adjustments.

Canonical encoding of an entry (version v1), hashed with SHA-256: the UTF-8 bytes of the JSON
array
    ["v1", entry_id, tx_id, kind, entity_type, entity_id, account, amount, currency,
     created_at, prev_hash]
with no spaces (separators "," and ":"), amount as a decimal string with exactly 4 decimal
places ("-12.5000"), created_at as UTC ISO 8601 with microseconds ("2026-11-01T00:00:00.000000Z"),
tx_id as lowercase hyphenated UUID text. The first entry's prev_hash is 64 zeros.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

GENESIS = "0" * 64
KINDS = ("INVOICE_ISSUED", "PAYMENT_RECEIVED", "PAYMENT_FAILED", "CREDIT_NOTE", "CREDIT_CONSUMED", "ADJUSTMENT",
         "AUDIT_SNAPSHOT", "INVOICE_VOIDED", "SUPPLEMENTARY_ISSUED")
_PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class Posting:
    account: str
    amount: Decimal  # debit > 0, credit < 0
    currency: str


@dataclass(frozen=True)
class LedgerTransaction:
    tx_id: uuid.UUID
    kind: str
    entity_type: str
    entity_id: str
    postings: tuple[Posting, ...]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ledger transaction kind {self.kind!r} not in {KINDS}")
        totals: dict[str, Decimal] = {}
        for p in self.postings:
            if p.amount != p.amount.quantize(_PLACES):
                raise ValueError(f"posting {p.account}: {p.amount} has more than 4 decimal places")
            totals[p.currency] = totals.get(p.currency, Decimal(0)) + p.amount
        unbalanced = {c: t for c, t in totals.items() if t != 0}
        if unbalanced or not self.postings:
            raise ValueError(f"ledger transaction {self.kind} {self.entity_id} does not balance: {unbalanced}")


@dataclass(frozen=True)
class LedgerEntry:
    entry_id: int
    tx_id: uuid.UUID
    kind: str  # stored in the `event` column
    entity_type: str
    entity_id: str
    account: str
    amount: Decimal
    currency: str
    created_at: datetime
    prev_hash: str
    hash: str = ""


def canonical_bytes(e: LedgerEntry) -> bytes:
    created = e.created_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    fields = ["v1", e.entry_id, str(e.tx_id), e.kind, e.entity_type, e.entity_id, e.account,
              f"{e.amount.quantize(_PLACES):f}", e.currency, created, e.prev_hash]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(e: LedgerEntry) -> str:
    return hashlib.sha256(canonical_bytes(e)).hexdigest()


def _tx(kind: str, entity_type: str, entity_id: str, postings) -> LedgerTransaction:
    return LedgerTransaction(uuid.uuid4(), kind, entity_type, entity_id, tuple(p for p in postings))


def invoice_issued(invoice_id: str, org_id: str, currency: str, subtotal: Decimal, tax: Decimal) -> LedgerTransaction:
    return _tx("INVOICE_ISSUED", "invoice", invoice_id, [
        Posting(f"receivable:{org_id}", subtotal + tax, currency),
        Posting("revenue", -subtotal, currency),
        Posting("tax_payable", -tax, currency)])


def payment_received(invoice_id: str, org_id: str, currency: str, amount: Decimal) -> LedgerTransaction:
    return _tx("PAYMENT_RECEIVED", "invoice", invoice_id, [
        Posting("cash", amount, currency), Posting(f"receivable:{org_id}", -amount, currency)])


def payment_failed(invoice_id: str, org_id: str, currency: str) -> LedgerTransaction:
    """A memo transaction: no money moves, but the failure is on the record, in order."""
    return _tx("PAYMENT_FAILED", "invoice", invoice_id, [
        Posting(f"receivable:{org_id}", Decimal("0.0000"), currency), Posting("cash", Decimal("0.0000"), currency)])


def document_issued(kind: str, document_id: str, org_id: str, currency: str, subtotal: Decimal, tax: Decimal,
                    corrects: str | None = None) -> LedgerTransaction:
    """INVOICE_ISSUED for an invoice; for a correction of one, SUPPLEMENTARY_ISSUED or CREDIT_NOTE
    (whose amounts are negative: revenue and tax go back down) with a memo posting (zero amount)
    on ``corrects:<invoice id>``, so the chain itself links the correction to the invoice."""
    if kind == "INVOICE":
        return invoice_issued(document_id, org_id, currency, subtotal, tax)
    if corrects is None or kind not in ("CREDIT_NOTE", "SUPPLEMENTARY"):
        raise ValueError(f"document {document_id}: a {kind} must name the invoice it corrects")
    if (kind == "CREDIT_NOTE") != (subtotal + tax < 0):
        raise ValueError(f"document {document_id}: a {kind} of {subtotal + tax} {currency} has the wrong sign")
    tx = invoice_issued(document_id, org_id, currency, subtotal, tax)
    return _tx("CREDIT_NOTE" if kind == "CREDIT_NOTE" else "SUPPLEMENTARY_ISSUED", "invoice", document_id,
               [*tx.postings, Posting(f"corrects:{corrects}", Decimal("0.0000"), currency)])


def invoice_voided(invoice_id: str, org_id: str, currency: str, subtotal: Decimal, tax: Decimal,
                   credits: Decimal) -> LedgerTransaction:
    """The issue reversed; prepaid credit it consumed goes back to the customer (Stripe returns an
    applied customer balance when an invoice is voided)."""
    postings = [Posting("revenue", subtotal, currency), Posting("tax_payable", tax, currency),
                Posting(f"receivable:{org_id}", -(subtotal + tax), currency)]
    if credits:
        postings += [Posting(f"receivable:{org_id}", credits, currency),
                     Posting(f"prepaid_credit:{org_id}", -credits, currency)]
    return _tx("INVOICE_VOIDED", "invoice", invoice_id, postings)


def credit_consumed(invoice_id: str, org_id: str, currency: str, amount: Decimal) -> LedgerTransaction:
    return _tx("CREDIT_CONSUMED", "invoice", invoice_id, [
        Posting(f"prepaid_credit:{org_id}", amount, currency), Posting(f"receivable:{org_id}", -amount, currency)])


def adjustment(entity_type: str, entity_id: str, postings: list[Posting]) -> LedgerTransaction:
    return _tx("ADJUSTMENT", entity_type, entity_id, postings)


def audit_snapshot_recorded(month: str, manifest_sha256: str, versions: dict[str, str],
                            location: str) -> LedgerTransaction:
    """Memo entries (zero amounts, currency XXX = no currency): the manifest hash in the entity id and
    one entry per stored object naming its S3 version, so the chain holds what was locked."""
    zero = Decimal("0.0000")
    postings = [Posting(f"audit:{name}@{version}", zero, "XXX") for name, version in sorted(versions.items())]
    postings.append(Posting(f"audit:location:{location}", zero, "XXX"))
    return _tx("AUDIT_SNAPSHOT", "audit_snapshot", f"{month}:{manifest_sha256}", postings)
