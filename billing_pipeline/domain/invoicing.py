"""Invoice drafts: rated charges rounded once per line, tax, total = subtotal + tax - credits.

Turkish invoices (region TR) are in lira: a contract rated in another currency has each line,
rounded in that currency, converted at the month's TCMB rate and rounded again to the kurus
(both amounts kept); a month that comes to zero in the contract's currency (a 100% discount)
comes to zero in lira too: its last discount line takes the lines' separate roundings (a kurus or
so). KDV is computed per line (as the e-invoice does) at the contract's rate, 20% unless the
contract says otherwise, on each line net of its share of the discounts (``discount_shares``: an
e-invoice takes no negative line), and the tax is the sum of the lines' KDV.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from .discount_shares import DISCOUNT, ShareableLine, discount_shares
from .money import UNIT_PRICE_PLACES, round_money
from .periods import Period
from .terms import ContractTerms, RatedCharge

# Turkish KDV general rate. Global customers are invoiced through Stripe, which computes their
# tax at finalisation, so their drafts carry none.
TAX_RATES: dict[str, Decimal] = {"TR": Decimal("0.20"), "GLOBAL": Decimal("0")}
LIRA = "TRY"


def tax_rate_for(region: str) -> Decimal:
    try:
        return TAX_RATES[region]
    except KeyError:
        raise ValueError(f"region {region!r} has no tax rule; known: {sorted(TAX_RATES)}") from None


@dataclass(frozen=True)
class InvoiceLine:
    line_no: int
    charge_id: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal  # rounded to the currency's minor unit
    vat_amount: Decimal = Decimal(0)  # KDV of this line (Turkish invoices)
    source_amount: Decimal | None = None  # the line in the contract's currency, when converted
    discount_share: Decimal = Decimal(0)  # what the discounts take of it on a Turkish e-invoice


@dataclass(frozen=True)
class Conversion:
    """The month's rate for a contract's currency: lira per unit, and the snapshot it comes from."""

    currency: str
    rate: Decimal
    ref: str
    estimated: bool = False


@dataclass(frozen=True)
class InvoiceDraft:
    contract_id: str
    org_id: str
    period: Period
    currency: str
    lines: tuple[InvoiceLine, ...]
    subtotal: Decimal
    tax_rate: Decimal
    tax: Decimal
    credits_applied: Decimal  # prepaid credit consumed, after tax
    total: Decimal  # subtotal + tax - credits_applied
    conversion: Conversion | None = None


def _shown_price(unit_price: Decimal) -> Decimal:
    """The unit price printed on a line: an effective price of a tiered or shared amount can have
    many digits; 12 places are shown. The line's amount comes from the exact value, not from this."""
    exponent = unit_price.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -UNIT_PRICE_PLACES:
        return unit_price.quantize(Decimal(1).scaleb(-UNIT_PRICE_PLACES), rounding=ROUND_HALF_UP).normalize()
    return unit_price


def _free_in_lira_too(priced: list[list]) -> None:
    """A month that comes to zero in the contract's currency comes to zero in lira: each line is
    converted and rounded on its own, so 100% off can leave a kurus either way; the last discount
    line takes it."""
    discounts = [p for p in priced if p[0].kind == DISCOUNT]
    rest = sum((p[1] for p in priced), Decimal(0))
    if discounts and rest and sum((p[2] for p in priced), Decimal(0)) == 0:
        discounts[-1][1] -= rest


def draft_invoice(terms: ContractTerms, charges: list[RatedCharge], period: Period,
                  credit_available: Decimal = Decimal(0), conversion: Conversion | None = None,
                  vat_rate: Decimal | None = None) -> InvoiceDraft:
    """Lines rounded once (converted lines: once in the contract's currency, once in lira); tax;
    then prepaid credit, like a payment, reduces what is due (never below zero); what is left of
    the credit carries to the next month."""
    if conversion is not None and conversion.currency != terms.currency:
        raise ValueError(f"contract {terms.contract_id} bills in {terms.currency}, the rate given is for "
                         f"{conversion.currency}")
    currency = LIRA if conversion is not None else terms.currency
    rate = tax_rate_for(terms.region) if vat_rate is None or terms.region != "TR" else vat_rate
    per_line_tax = terms.region == "TR"
    priced = []  # (charge, amount, source, unit price shown)
    for c in charges:
        if c.currency != terms.currency:
            raise ValueError(f"charge {c.charge_id} is in {c.currency}, contract {terms.contract_id} bills in {terms.currency}")
        amount = round_money(c.amount, terms.currency)
        if conversion is None:
            priced.append([c, amount, None, _shown_price(c.unit_price)])
        else:
            priced.append([c, round_money(amount * conversion.rate, LIRA), amount,
                           _shown_price(c.unit_price * conversion.rate)])
    if conversion is not None:
        _free_in_lira_too(priced)
    try:
        shares = (discount_shares([ShareableLine(i, c.kind, amount, (c.details or {}).get("applies_to"))
                                   for i, (c, amount, _, _) in enumerate(priced, start=1)], currency)
                  if per_line_tax else {})
    except ValueError as e:
        raise ValueError(f"contract {terms.contract_id}, {period.label}: {e}") from None
    lines = []
    for i, (c, amount, source, unit_price) in enumerate(priced, start=1):
        share = shares.get(i, Decimal(0))
        vat = round_money((amount - share) * rate, currency) if per_line_tax and c.kind != DISCOUNT else Decimal(0)
        lines.append(InvoiceLine(i, c.charge_id, c.description, c.quantity, unit_price, amount, vat, source, share))
    subtotal = round_money(sum((line.amount for line in lines), Decimal(0)), currency)  # fixes the exponent
    tax = (round_money(sum((line.vat_amount for line in lines), Decimal(0)), currency) if per_line_tax
           else round_money(subtotal * rate, currency))
    if conversion is not None and credit_available:
        raise ValueError(f"contract {terms.contract_id}: prepaid credit in {terms.currency} on an invoice converted "
                         f"to {LIRA} is not supported")
    credits = min(round_money(credit_available, currency), subtotal + tax)
    return InvoiceDraft(terms.contract_id, terms.org_id, period, currency, tuple(lines),
                        subtotal, rate, tax, credits, subtotal + tax - credits, conversion)
