"""What we send Parasut for one Turkish invoice. No I/O here.

Rules (also in the README):
- The invoice is in lira (Parasut's code TRL), issued on the first day after the month, due in
  the contract's days_until_due.
- Each line goes as quantity 1 at its lira amount, with the metered quantity in its description:
  Parasut computes a line's net as quantity x unit price rounded, and our amounts come from tiered
  and shared prices whose exact product has many digits; sending the amount keeps Parasut's
  figures equal to ours to the kurus. KDV per line at the contract's rate (20% by default).
- An e-invoice takes no negative line: a discount line is not sent; the lines it reduces carry
  their share of it (``discount_type: amount``, ``discount_value``; spread at drafting, see
  ``discount_shares``), and their KDV is on what is left of them, as our draft computed it.
- A fixed-price contract goes as one static line ("Monthly RPC Service - 25,000 TL", less its
  discount); its usage goes in an appendix (JSON and PDF) stored in S3 and referenced, with its
  SHA-256, in the note. (An amended fixed contract has two prorated fee lines: both go.)
- The description carries our invoice id (the reference the sink looks up after an uncertain
  failure) and the signed contract's document hash.
- Refused before any call: a customer without a valid tax number (VKN, 10 digits; or TCKN, 11
  digits with its check digits), a KDV rate Turkey does not have, an invoice not in lira, a draft
  whose discounts are not spread over its lines or whose KDV is not what Parasut will compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from .money import round_money

PARASUT_LIRA = "TRL"
# KDV rates in force since 10 July 2023 (8% and 18% were raised to 10% and 20%), in percent. A 0%
# invoice needs an exemption code (istisna) on the e-document, which contracts do not carry: refused.
KDV_RATES = (Decimal(1), Decimal(10), Decimal(20))


class InvoiceRejected(ValueError):
    """This invoice cannot go to Parasut as it stands; the message is the stored reason."""


@dataclass(frozen=True)
class TurkishLine:
    line_no: int
    description: str
    amount: Decimal  # lira, rounded
    vat_amount: Decimal
    discount_share: Decimal = Decimal(0)  # what the invoice's discount lines take of it


@dataclass(frozen=True)
class TurkishInvoice:
    invoice_id: str
    contract_id: str
    contract_type: str  # METERED, FIXED, HYBRID
    org_id: str
    legal_name: str
    tax_number: str | None
    tax_office: str | None
    email: str | None
    address: str | None
    currency: str
    period_start: date
    issue_date: date
    days_until_due: int
    vat_rate: Decimal  # a share: 0.20
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    lines: tuple[TurkishLine, ...]
    contract_doc_sha256: str | None = None
    problem: str | None = None  # set at drafting (no trustworthy FX rate)
    corrects: str | None = None  # a supplementary invoice or refund: the issued invoice it corrects
    credits_applied: Decimal = Decimal(0)  # prepaid credit our total deducts (lira)
    fx_estimated: bool = False  # converted at TCMB's last known rate, no bulletin for the issue date
    e_document_scenario: str = "basic"  # the contract's e-Fatura scenario: basic (TEMEL) or commercial (TICARI)

    @property
    def period_label(self) -> str:
        return self.period_start.strftime("%Y-%m")


def tckn_is_valid(number: str) -> bool:
    """The Turkish identity number's two check digits."""
    if len(number) != 11 or not number.isdigit() or number[0] == "0":
        return False
    d = [int(c) for c in number]
    tenth = ((d[0] + d[2] + d[4] + d[6] + d[8]) * 7 - (d[1] + d[3] + d[5] + d[7])) % 10
    return d[9] == tenth and d[10] == sum(d[:10]) % 10


def vkn_is_valid(number: str) -> bool:
    """The tax number's (vergi kimlik numarasi) check digit, the tenth."""
    if len(number) != 10 or not number.isdigit():
        return False
    total = 0
    for i, digit in enumerate(number[:9]):
        shifted = (int(digit) + 9 - i) % 10
        total += 9 if shifted == 9 else (shifted * 2 ** (9 - i)) % 9
    return (10 - total % 10) % 10 == int(number[9])


def contact_type(tax_number: str) -> str:
    return "company" if len(tax_number) == 10 else "person"


def vat_percent(inv: TurkishInvoice) -> Decimal:
    return (inv.vat_rate * 100).normalize()


def check_issuable(inv: TurkishInvoice) -> None:
    if inv.problem:
        raise InvoiceRejected(f"invoice {inv.invoice_id}: {inv.problem}")
    number = (inv.tax_number or "").strip()
    if not number:
        raise InvoiceRejected(f"invoice {inv.invoice_id}: customer {inv.org_id} has no tax number (VKN or TCKN); "
                              "a Turkish e-invoice needs one")
    if not (vkn_is_valid(number) or tckn_is_valid(number)):
        raise InvoiceRejected(f"invoice {inv.invoice_id}: customer {inv.org_id} tax number {number!r} is neither a "
                              "valid VKN (10 digits) nor a valid TCKN (11 digits): check digit")
    if vat_percent(inv) == 0:
        raise InvoiceRejected(f"invoice {inv.invoice_id}: KDV 0% needs an exemption code (istisna) on the "
                              "e-document, which the contract does not give; issue it by hand in Parasut")
    if vat_percent(inv) not in KDV_RATES:
        raise InvoiceRejected(f"invoice {inv.invoice_id}: KDV rate {vat_percent(inv):f}% is not a Turkish rate "
                              f"({', '.join(f'{r}%' for r in KDV_RATES)})")
    if inv.currency != "TRY":
        raise InvoiceRejected(f"invoice {inv.invoice_id}: it is in {inv.currency}, a Turkish invoice must be in TRY")
    if inv.total < 0 and inv.corrects is None:
        raise InvoiceRejected(f"invoice {inv.invoice_id}: negative total {inv.total} TRY is a refund, not an invoice")
    if inv.credits_applied:
        # the e-invoice states its lines' total; ours deducts the credit, and the ledger would follow ours
        raise InvoiceRejected(f"invoice {inv.invoice_id}: prepaid credit of {inv.credits_applied} TRY cannot be "
                              f"deducted on a Turkish e-invoice (it would state {inv.subtotal + inv.tax} TRY, ours "
                              f"{inv.total} TRY); settle the credit as a payment in Parasut and issue it by hand")
    if inv.fx_estimated:
        raise InvoiceRejected(f"invoice {inv.invoice_id}: its lira amounts use an estimated rate (TCMB's last known, "
                              "no bulletin for the issue date); re-run fx_snapshot once TCMB answers, then "
                              "invoice_drafts")


def contact_attributes(inv: TurkishInvoice) -> dict:
    number = inv.tax_number.strip()
    attributes = {"name": inv.legal_name, "contact_type": contact_type(number), "tax_number": number,
                  "account_type": "customer"}
    if inv.tax_office:
        attributes["tax_office"] = inv.tax_office
    if inv.email:
        attributes["email"] = inv.email
    if inv.address:
        attributes["address"] = inv.address
    return attributes


def lira_text(amount: Decimal) -> str:
    """25000 -> '25,000'; 25000.5 -> '25,000.50'"""
    return f"{amount:,.0f}" if amount == amount.to_integral_value() else f"{amount:,.2f}"


@dataclass(frozen=True)
class Detail:
    """One Parasut line, at quantity 1."""

    description: str
    amount: Decimal  # its unit price
    discount: Decimal  # its discount_value (an amount), 0 for none


def detail_lines(inv: TurkishInvoice) -> list[Detail]:
    """Parasut's lines: no discount line (the lines it reduces carry it); a fixed contract's usage,
    at zero, goes to the appendix."""
    if inv.corrects is not None:  # a correction's lines are differences, all of one sign
        return [Detail(line.description, line.amount, Decimal(0)) for line in inv.lines]
    discounted = -sum((line.amount for line in inv.lines if line.amount < 0), Decimal(0))
    spread = sum((line.discount_share for line in inv.lines), Decimal(0))
    if spread != discounted:
        raise InvoiceRejected(f"invoice {inv.invoice_id}: its discount lines come to {discounted} TRY but its lines "
                              f"carry {spread} TRY of them; it was drafted before discounts were spread over the "
                              "lines: re-draft it (billing close)")
    if inv.contract_type != "FIXED":
        return [Detail(line.description, line.amount, line.discount_share) for line in inv.lines if line.amount >= 0]
    fees = [line for line in inv.lines if line.amount > 0]
    if len(fees) > 1:
        return [Detail(line.description, line.amount, line.discount_share) for line in fees]
    fee = fees[0].amount if fees else Decimal(0)
    return [Detail(f"Monthly RPC Service - {lira_text(fee)} TL", fee, fees[0].discount_share if fees else Decimal(0))]


def details_kdv(inv: TurkishInvoice, details: list[Detail]) -> Decimal:
    """The KDV Parasut computes: per line, on its amount less its discount, rounded half-up."""
    return sum((round_money((d.amount - d.discount) * inv.vat_rate, "TRY") for d in details), Decimal(0))


def net_of_discounts(attributes: dict) -> Decimal:
    """A Parasut document's total before KDV, what our subtotal is: its ``before_taxes_total``
    ("Vergiler Haric Toplam"), else its ``gross_total`` ("Ara toplam") less its line and invoice
    discounts (a purchase bill has no ``before_taxes_total``)."""
    if attributes.get("before_taxes_total") is not None:
        return Decimal(str(attributes["before_taxes_total"]))
    return sum((Decimal(str(attributes.get(k) or 0)) * sign for k, sign in
                (("gross_total", 1), ("total_discount", -1), ("total_invoice_discount", -1))), Decimal(0))


def reference_text(inv: TurkishInvoice, appendix: str | None = None) -> str:
    parts = [f"RPC hizmet bedeli {inv.period_label}", f"Ref: {inv.invoice_id}"]
    if inv.corrects:
        parts.insert(1, f"Duzeltilen fatura: {inv.corrects}")  # the issued invoice this one corrects
    if inv.contract_doc_sha256:
        parts.append(f"Sozlesme SHA-256: {inv.contract_doc_sha256}")
    if appendix:
        parts.append(f"Kullanim eki: {appendix}")
    return " | ".join(parts)


def sales_invoice_body(inv: TurkishInvoice, contact_id: str, appendix: str | None = None) -> dict:
    check_issuable(inv)
    vat = vat_percent(inv)
    lines = detail_lines(inv)
    kdv = details_kdv(inv, lines)
    if kdv != inv.tax:
        raise InvoiceRejected(f"invoice {inv.invoice_id}: its KDV {inv.tax} TRY is not what Parasut computes on its "
                              f"lines ({kdv} TRY): re-draft it (billing close)")
    details = []
    for d in lines:
        attributes = {"quantity": Decimal(1), "unit_price": d.amount, "vat_rate": vat,
                      "description": d.description[:255]}
        if d.discount:
            attributes |= {"discount_type": "amount", "discount_value": d.discount}
        details.append({"type": "sales_invoice_details", "attributes": attributes})
    return {"data": {
        "type": "sales_invoices",
        "attributes": {"item_type": "invoice", "description": reference_text(inv, appendix),
                       "issue_date": inv.issue_date.isoformat(),
                       "due_date": (inv.issue_date + timedelta(days=inv.days_until_due)).isoformat(),
                       "currency": PARASUT_LIRA},
        "relationships": {"details": {"data": details},
                          "contact": {"data": {"id": contact_id, "type": "contacts"}}},
    }}


def appendix_document(inv: TurkishInvoice) -> dict:
    """The usage appendix of a fixed-price invoice (its JSON form)."""
    return {"invoice_id": inv.invoice_id, "contract_id": inv.contract_id, "period": inv.period_label,
            "fixed_fee_try": f"{inv.subtotal:f}",
            "lines": [{"line_no": line.line_no, "description": line.description, "amount_try": f"{line.amount:f}"}
                      for line in inv.lines],
            "contract_doc_sha256": inv.contract_doc_sha256}


def refund_bill_body(inv: TurkishInvoice, contact_id: str) -> dict:
    """A credit note in Parasut: a purchase bill of item_type "refund" (iade) from the customer,
    one line per corrected line at its (positive) lira amount and KDV rate; its description
    names our credit note and the issued invoice it corrects."""
    check_issuable(inv)
    if inv.corrects is None or inv.total >= 0:
        raise InvoiceRejected(f"invoice {inv.invoice_id}: only a credit note (negative, correcting an issued "
                              "invoice) becomes a refund")
    details = [{"type": "purchase_bill_details",
                "attributes": {"quantity": Decimal(1), "unit_price": -line.amount, "vat_rate": vat_percent(inv),
                               "description": line.description[:255]}}
               for line in inv.lines]
    return {"data": {
        "type": "purchase_bills",
        "attributes": {"item_type": "refund", "description": f"Iade | {reference_text(inv)}",
                       "issue_date": inv.issue_date.isoformat(), "due_date": inv.issue_date.isoformat(),
                       "currency": PARASUT_LIRA},
        "relationships": {"details": {"data": details},
                          "supplier": {"data": {"id": contact_id, "type": "contacts"}}},
    }}
