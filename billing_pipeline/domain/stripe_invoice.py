"""What we send Stripe for one invoice: pre-rated items on a draft, then finalize. No I/O here.

Rules (also in the README):
- Amounts go as integer minor units of the invoice currency, taken from our rounded lines; Stripe
  never re-prices anything. A fixed contract's usage goes as zero-amount information items.
- At most 250 items per Stripe invoice. A draft with more lines keeps lines 1..249 as items and
  folds lines 250..n into one item whose amount is their sum and whose metadata names the line
  range; every line stays in our invoice_lines and in the audit snapshot. Totals never change.
- Prepaid credit (applied after tax) goes as a customer balance credit that Stripe applies when
  it finalizes, so Stripe's subtotal and total stay equal to ours and amount_due equals our total.
- Idempotency keys are derived from (invoice id, which carries the version; step; line number),
  so a retry or a re-run after a crash repeats the same request, never a new one.
- Refused before any call: a currency Stripe does not take, a negative subtotal or total, a
  negative line (a discount) on a contract taxed by Stripe Tax, which takes no negative invoice
  item (stopping before the first call leaves no half-built draft in Stripe).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from .money import minor_units, to_minor_units

MAX_ITEMS = 250

# Currencies Stripe can present an invoice in (stripe.com/docs/currencies, US account), minus the
# ones where Stripe's minor unit differs from ISO 4217 (HUF, ISK, TWD, UGX): refused rather than
# risk a factor of 100. The three-decimal ones (BHD, JOD, KWD, OMR, TND) take amounts whose last
# digit is 0, so their lines must be whole hundredths.
STRIPE_CURRENCIES = frozenset("""
USD AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BIF BMD BND BOB BRL BSD BWP BYN BZD CAD CDF
CHF CLP CNY COP CRC CVE CZK DJF DKK DOP DZD EGP ETB EUR FJD FKP GBP GEL GIP GMD GNF GTQ GYD HKD HNL HTG
IDR ILS INR JMD JPY KES KGS KHR KMF KRW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MUR MVR
MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SEK
SGD SHP SLE SOS SRD SZL THB TJS TOP TRY TTD TZS UAH UYU UZS VND VUV WST XAF XCD XOF XPF YER ZAR ZMW
BHD JOD KWD OMR TND
""".split())

COLLECTION_METHODS = ("send_invoice", "charge_automatically")


class InvoiceRejected(ValueError):
    """This invoice cannot go to Stripe as it stands; the message is the stored reason."""


@dataclass(frozen=True)
class IssuableLine:
    line_no: int
    charge_id: str
    description: str
    amount: Decimal  # rounded to the minor unit


@dataclass(frozen=True)
class IssuableInvoice:
    """A draft invoice with the contract terms Stripe needs."""

    invoice_id: str  # '<contract>:<YYYY-MM>:v<version>'
    version: int
    contract_id: str
    org_id: str
    period_start: date
    currency: str
    subtotal: Decimal
    tax: Decimal
    credits_applied: Decimal
    total: Decimal
    lines: tuple[IssuableLine, ...]
    collection_method: str = "send_invoice"
    days_until_due: int = 30
    stripe_tax: bool = False
    contract_doc_sha256: str | None = None
    corrects: str | None = None  # a supplementary invoice: the issued invoice it corrects

    @property
    def period_label(self) -> str:
        return self.period_start.strftime("%Y-%m")


@dataclass(frozen=True)
class StripeRequest:
    step: str
    method: str
    path: str
    params: dict
    idempotency_key: str | None = None  # None for reads


@dataclass(frozen=True)
class InvoicePlan:
    """The writes for one invoice, in order; ids not known yet are the placeholders given."""

    create: StripeRequest
    items: tuple[StripeRequest, ...]
    credit: StripeRequest | None
    finalize: StripeRequest
    subtotal_minor: int
    total_minor: int
    credit_minor: int


def idempotency_key(invoice_id: str, step: str, line: int | str | None = None) -> str:
    """Readable where it fits Stripe's 255 characters; a SHA-256 of the same parts otherwise."""
    key = f"billing:{invoice_id}:{step}" + (f":{line}" if line is not None else "")
    return key if len(key) <= 255 else "billing:sha256:" + hashlib.sha256(key.encode()).hexdigest()


def customer_key(org_id: str, step: str, params: dict | None = None) -> str:
    """Customer requests serve the org, not an invoice; an update's key covers its parameters,
    so a later change of metadata is a new request while a retry is the same one."""
    suffix = ":" + hashlib.sha256(repr(sorted(_flat(params or {}).items())).encode()).hexdigest()[:16] if params else ""
    key = f"billing:customer:{org_id}:{step}{suffix}"
    return key if len(key) <= 255 else "billing:sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _flat(params: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in params.items():
        name = f"{prefix}[{k}]" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flat(v, name))
        else:
            out[name] = str(v)
    return out


def check_issuable(inv: IssuableInvoice) -> None:
    if inv.currency not in STRIPE_CURRENCIES:
        raise InvoiceRejected(f"invoice {inv.invoice_id}: currency {inv.currency} is not one Stripe can invoice in")
    if inv.subtotal < 0 or inv.total < 0:
        raise InvoiceRejected(f"invoice {inv.invoice_id}: lines sum to a negative amount (subtotal {inv.subtotal}, "
                              f"total {inv.total} {inv.currency}); a negative balance is a credit note, not an invoice")
    if inv.collection_method not in COLLECTION_METHODS:
        raise InvoiceRejected(f"invoice {inv.invoice_id}: collection method {inv.collection_method!r} not in "
                              f"{COLLECTION_METHODS}")
    if not inv.lines:
        raise InvoiceRejected(f"invoice {inv.invoice_id}: has no lines")
    negative = [line for line in inv.lines if line.amount < 0]
    if inv.stripe_tax and negative:
        raise InvoiceRejected(f"invoice {inv.invoice_id}: line {negative[0].line_no} ({negative[0].description}, "
                              f"{negative[0].amount} {inv.currency}) is negative and Stripe Tax takes no negative "
                              f"invoice item; issue it without Stripe Tax (contracts.stripe_tax) or without the "
                              f"discount")
    if minor_units(inv.currency) == 3:
        odd = [line.line_no for line in inv.lines if line.amount != line.amount.quantize(Decimal("0.01"))]
        if odd:
            raise InvoiceRejected(f"invoice {inv.invoice_id}: Stripe takes {inv.currency} amounts in whole hundredths "
                                  f"(last digit 0); lines {odd[:10]} are not")
    line_sum = sum((line.amount for line in inv.lines), Decimal(0))
    if line_sum != inv.subtotal:
        raise InvoiceRejected(f"invoice {inv.invoice_id}: lines sum to {line_sum}, subtotal is {inv.subtotal}")


def customer_params(org_id: str, legal_name: str, email: str | None, country: str,
                    contract_ids: list[str]) -> dict:
    params: dict = {"name": legal_name, "address": {"country": country},
                    "metadata": {"org_id": org_id, "contract_ids": ",".join(sorted(contract_ids))[:500]}}
    if email:
        params["email"] = email
    return params


def plan_invoice(inv: IssuableInvoice, customer_id: str, stripe_invoice_id: str) -> InvoicePlan:
    """The requests that issue ``inv``; raises InvoiceRejected when it cannot be issued."""
    check_issuable(inv)
    currency = inv.currency.lower()
    metadata = {"invoice_id": inv.invoice_id, "contract_id": inv.contract_id, "org_id": inv.org_id,
                "period": inv.period_label, "version": str(inv.version)}
    if inv.contract_doc_sha256:
        metadata["contract_doc_sha256"] = inv.contract_doc_sha256
    description = f"RPC service {inv.period_label} (contract {inv.contract_id})"
    if inv.corrects:
        metadata["corrects_invoice_id"] = inv.corrects
        description = f"Supplementary invoice: {description}, correcting invoice {inv.corrects}"
    create_params: dict = {
        "customer": customer_id, "currency": currency, "auto_advance": "false",
        "collection_method": inv.collection_method, "pending_invoice_items_behavior": "exclude",
        "description": description,
        "metadata": metadata,
    }
    if inv.collection_method == "send_invoice":
        create_params["days_until_due"] = str(inv.days_until_due)
    if inv.stripe_tax:
        create_params["automatic_tax"] = {"enabled": "true"}
    create = StripeRequest("create_invoice", "post", "/v1/invoices", create_params,
                           idempotency_key(inv.invoice_id, "create_invoice"))

    groups = _item_groups(inv.lines)
    items = []
    for group in groups:
        first, last = group[0], group[-1]
        amount = sum((line.amount for line in group), Decimal(0))
        line_ref = str(first.line_no) if len(group) == 1 else f"{first.line_no}-{last.line_no}"
        description = first.description if len(group) == 1 else (
            f"Further charges: invoice lines {first.line_no}-{last.line_no} ({len(group)} lines, itemised in the "
            f"usage statement)")
        items.append(StripeRequest("add_item", "post", "/v1/invoiceitems", {
            "customer": customer_id, "invoice": stripe_invoice_id, "currency": currency,
            "amount": str(to_minor_units(amount, inv.currency)), "description": description[:500],
            "metadata": {"line_id": f"{inv.invoice_id}#{line_ref}", "line_nos": line_ref,
                         "charge_id": first.charge_id if len(group) == 1 else "", "invoice_id": inv.invoice_id,
                         "contract_id": inv.contract_id, "period": inv.period_label},
        }, idempotency_key(inv.invoice_id, "add_item", line_ref)))

    credit_minor = to_minor_units(inv.credits_applied, inv.currency)
    credit = None
    if credit_minor:
        credit = StripeRequest("apply_credit", "post", f"/v1/customers/{customer_id}/balance_transactions", {
            "amount": str(-credit_minor), "currency": currency,
            "description": f"Prepaid credit applied to {inv.invoice_id}",
            "metadata": {"invoice_id": inv.invoice_id, "contract_id": inv.contract_id},
        }, idempotency_key(inv.invoice_id, "apply_credit"))
    finalize = StripeRequest("finalize", "post", f"/v1/invoices/{stripe_invoice_id}/finalize",
                             {"auto_advance": "false"}, idempotency_key(inv.invoice_id, "finalize"))
    return InvoicePlan(create, tuple(items), credit, finalize, to_minor_units(inv.subtotal, inv.currency),
                       to_minor_units(inv.total, inv.currency), credit_minor)


def _item_groups(lines: tuple[IssuableLine, ...]) -> list[tuple[IssuableLine, ...]]:
    if len(lines) <= MAX_ITEMS:
        return [(line,) for line in lines]
    head = [(line,) for line in lines[:MAX_ITEMS - 1]]
    return head + [tuple(lines[MAX_ITEMS - 1:])]
