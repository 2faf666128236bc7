"""Correcting an issued invoice: the per-line difference between the version in force and a
recomputed version, as a credit note and/or a supplementary invoice.

Rules (README, "Disputes"):
- An issued invoice is never edited. Lines are matched by their rated charge id; a line only in
  the new version counts from zero, a line only in the old one goes to zero.
- Lines whose amount went down go on a credit note, lines whose amount went up on a supplementary
  invoice; a dispute can produce both (a volume tier crossed, a commitment true-up shrinking while
  usage grows), because neither Stripe credit notes nor Turkish e-invoices take negative lines.
- Each difference is exact: both sides were already rounded once to the minor unit, so no new
  rounding happens. Each document is a legal document of its own: its KDV is computed on its own
  lines (each line's difference times the rate, rounded half-up to the kurus), as the e-invoice
  does; the sum of the documents' KDV can therefore differ from a fresh computation of the new
  version by at most 0.01 per corrected line, and the ledger follows the documents.
- Only the amounts matter: a line whose quantity changed but whose amount did not (usage inside an
  allowance) is on no document. A recomputation that changes no amount issues nothing.
- Prepaid credit consumed at issue stays consumed: corrections are payable, or credited, in full.
- A credit note's amounts are negative in our tables (the month's revenue is the plain sum of its
  documents); the providers receive their magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .money import round_money

CREDIT_NOTE = "CREDIT_NOTE"
SUPPLEMENTARY = "SUPPLEMENTARY"
_ID_SUFFIX = {CREDIT_NOTE: "credit-note", SUPPLEMENTARY: "supplementary"}


@dataclass(frozen=True)
class VersionLine:
    charge_id: str
    description: str
    quantity: Decimal
    amount: Decimal
    source_amount: Decimal | None = None  # in the contract's currency, when the invoice was converted


@dataclass(frozen=True)
class CorrectionLine:
    line_no: int
    charge_id: str
    description: str
    quantity: Decimal  # the quantity's difference (informative: the amount is what is corrected)
    amount: Decimal  # after - before: negative on a credit note
    vat_amount: Decimal
    amount_before: Decimal
    amount_after: Decimal
    source_amount: Decimal | None = None


@dataclass(frozen=True)
class Correction:
    kind: str  # CREDIT_NOTE or SUPPLEMENTARY
    lines: tuple[CorrectionLine, ...]
    subtotal: Decimal
    tax: Decimal

    @property
    def total(self) -> Decimal:
        return self.subtotal + self.tax


def correction_id(version_invoice_id: str, kind: str) -> str:
    """'<contract>:<YYYY-MM>:v2' -> '<contract>:<YYYY-MM>:v2:credit-note' / ':supplementary'."""
    return f"{version_invoice_id}:{_ID_SUFFIX[kind]}"


def _zero_like(value: Decimal) -> Decimal:
    return value - value


def line_differences(before: list[VersionLine], after: list[VersionLine], currency: str,
                     vat_rate: Decimal | None = None) -> list[CorrectionLine]:
    """Every line whose amount changed, in the new version's order, then lines it no longer has."""
    old = {line.charge_id: line for line in before}
    new = {line.charge_id: line for line in after}
    if len(old) != len(before) or len(new) != len(after):
        raise ValueError("an invoice version lists the same rated charge twice")
    changed = []
    for charge_id in [*new, *(c for c in old if c not in new)]:
        a, b = new.get(charge_id), old.get(charge_id)
        amount_after = a.amount if a else _zero_like(b.amount)
        amount_before = b.amount if b else _zero_like(a.amount)
        if amount_after == amount_before:
            continue
        source = None
        if (a and a.source_amount is not None) or (b and b.source_amount is not None):
            source = ((a.source_amount or 0) if a else 0) - ((b.source_amount or 0) if b else 0)
        changed.append(CorrectionLine(
            0, charge_id, _description(a, b),
            (a.quantity if a else 0) - (b.quantity if b else 0),
            amount_after - amount_before,
            round_money((amount_after - amount_before) * vat_rate, currency) if vat_rate else Decimal(0),
            amount_before, amount_after, source))
    return changed


def _description(after: VersionLine | None, before: VersionLine | None) -> str:
    """What the customer reads on the document: the line as it is now and as it was invoiced."""
    if after is None:
        return f"Correction: {before.description} (removed)"
    if before is None or before.description == after.description:
        return f"Correction: {after.description}"
    return f"Correction: {after.description} (invoiced as: {before.description})"


def corrections(before: list[VersionLine], after: list[VersionLine], currency: str,
                vat_rate: Decimal | None = None) -> list[Correction]:
    """The credit note (lines that went down) and the supplementary invoice (lines that went up)
    that take the version in force to the new one; empty when no amount changed. ``vat_rate``:
    the KDV share taxed per line (Turkish invoices), None when the provider taxes (Stripe)."""
    documents = []
    differences = line_differences(before, after, currency, vat_rate)
    for kind, wanted in ((CREDIT_NOTE, lambda d: d.amount < 0), (SUPPLEMENTARY, lambda d: d.amount > 0)):
        lines = [d for d in differences if wanted(d)]
        if not lines:
            continue
        numbered = tuple(CorrectionLine(i, *(getattr(d, f) for f in _FIELDS)) for i, d in enumerate(lines, start=1))
        subtotal = sum((d.amount for d in numbered), Decimal(0))
        tax = sum((d.vat_amount for d in numbered), Decimal(0))
        documents.append(Correction(kind, numbered, subtotal, tax))
    return documents


_FIELDS = ("charge_id", "description", "quantity", "amount", "vat_amount", "amount_before", "amount_after",
           "source_amount")
