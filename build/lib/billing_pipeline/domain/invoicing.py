"""Invoice drafts: rated charges rounded once per line, tax on the subtotal, total = sum."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from .money import UNIT_PRICE_PLACES, round_money
from .periods import Period
from .rating import ContractTerms, RatedCharge

# Turkish KDV general rate. Global customers are invoiced through Stripe, which computes their
# tax at finalisation, so their drafts carry none.
TAX_RATES: dict[str, Decimal] = {"TR": Decimal("0.20"), "GLOBAL": Decimal("0")}


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
    total: Decimal


def _shown_price(unit_price: Decimal) -> Decimal:
    """The unit price printed on a line: an effective price of a tiered or shared amount can have
    many digits; 12 places are shown. The line's amount comes from the exact value, not from this."""
    exponent = unit_price.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -UNIT_PRICE_PLACES:
        return unit_price.quantize(Decimal(1).scaleb(-UNIT_PRICE_PLACES), rounding=ROUND_HALF_UP).normalize()
    return unit_price


def draft_invoice(terms: ContractTerms, charges: list[RatedCharge], period: Period) -> InvoiceDraft:
    lines = []
    for i, c in enumerate(charges, start=1):
        if c.currency != terms.currency:
            raise ValueError(f"charge {c.charge_id} is in {c.currency}, contract {terms.contract_id} bills in {terms.currency}")
        lines.append(InvoiceLine(i, c.charge_id, c.description, c.quantity, _shown_price(c.unit_price),
                                 round_money(c.amount, terms.currency)))
    subtotal = sum((line.amount for line in lines), Decimal(0))
    subtotal = round_money(subtotal, terms.currency)  # a no-op on exact sums; fixes the exponent
    rate = tax_rate_for(terms.region)
    tax = round_money(subtotal * rate, terms.currency)
    return InvoiceDraft(terms.contract_id, terms.org_id, period, terms.currency, tuple(lines),
                        subtotal, rate, tax, subtotal + tax)
