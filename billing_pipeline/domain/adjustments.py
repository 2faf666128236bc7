"""Month-level adjustments after the usage and fees are rated: the minimum-commitment true-up,
then discounts. Both are exact (unrounded) charges like any other; invoicing rounds each once.

Both are measured against what the other charges come to on the invoice, each rounded as its
line is (``_on_invoice``), not against their exact sum: the customer reads "100% off" or "a
minimum of 100.00" against the lines printed above it. Measured against the exact sum, a 100%
discount of lines of 0.11 and 0.05 (exactly 0.105 and 0.045) was -0.15 and left 0.01 due, and a
true-up to 100.00 over lines rounded up from 99.985 made the month 100.02."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal, localcontext
from typing import Literal

from .discount_shares import REACH
from .money import minor_units, round_money
from .periods import Period
from .terms import RatedCharge, TermsPart


@dataclass(frozen=True)
class Discount:
    discount_id: str
    kind: Literal["PERCENT", "FIXED"]
    value: Decimal  # percent (10 = 10%) or an amount per full month
    applies_to: Literal["ALL", "USAGE", "BASE_FEE"]
    valid_from: date
    valid_to: date | None  # exclusive
    description: str

    def __post_init__(self) -> None:
        if self.value <= 0 or (self.kind == "PERCENT" and self.value > 100):
            raise ValueError(f"discount {self.discount_id}: value {self.value} out of range for {self.kind}")


def _days(parts: list[TermsPart]) -> list[date]:
    return [d for part in parts for d in part.days]


def _on_invoice(charges: list[RatedCharge], currency: str, kinds: set[str] | None = None) -> Decimal:
    """What the charges (of ``kinds``, or all) come to on the invoice: each rounded as its line."""
    return sum((round_money(c.amount, currency) for c in charges if kinds is None or c.kind in kinds), Decimal(0))


def _charge(parts, period, kind, description, amount, details) -> RatedCharge:
    terms = parts[-1].terms
    key = f"{terms.contract_id}:{period.label}:{kind}" + (f":{details['discount_id']}" if kind == "DISCOUNT" else "")
    return RatedCharge(key, terms.contract_id, kind, None, None, description, Decimal(1), amount, amount,
                       terms.currency, details, terms.plan.plan_id)


def true_up(parts: list[TermsPart], period: Period, charges: list[RatedCharge]) -> list[RatedCharge]:
    """If the month's spend is below the minimum commitment (prorated by active days), a line
    brings it up to the commitment."""
    commitment = parts[-1].terms.commitment
    days = _days(parts)
    if not commitment or not days:
        return []
    with localcontext() as ctx:
        ctx.prec = 60
        floor = commitment * len(days) / len(period.days())
    currency = parts[-1].terms.currency
    spend = _on_invoice(charges, currency)
    if spend >= floor:
        return []
    return [_charge(parts, period, "TRUE_UP",
                    f"Minimum commitment true-up ({amount_label(commitment, currency)} per month)", floor - spend,
                    {"commitment": str(commitment), "prorated_commitment": str(floor), "spend": str(spend),
                     "active_days": len(days)})]


def amount_label(value: Decimal, currency: str) -> str:
    """An amount of the contract's terms as a customer reads it on a line: in the currency's minor
    units (1,000.00 TRY), more places only where it has them. The database's scale (1,000.000000)
    went onto Stripe and Parasut lines as it was."""
    places = Decimal(1).scaleb(-minor_units(currency))
    shown = value.quantize(places) if value == value.quantize(places) else value.normalize()
    return f"{shown:,f} {currency}"


def apply_discounts(parts: list[TermsPart], period: Period, charges: list[RatedCharge],
                    discounts: tuple[Discount, ...]) -> list[RatedCharge]:
    """Discounts valid on some of the month's active days, prorated by those days, in id order.
    Together they never take the month below zero."""
    days = _days(parts)
    currency = parts[-1].terms.currency
    left = _on_invoice(charges, currency)  # what the discounts may take, kept as the lines will show it
    out = []
    for d in sorted(discounts, key=lambda d: d.discount_id):
        overlap = [x for x in days if x >= d.valid_from and (d.valid_to is None or x < d.valid_to)]
        if not overlap or left <= 0:
            continue
        base = _on_invoice(charges, currency, REACH[d.applies_to])
        with localcontext() as ctx:
            ctx.prec = 60
            if d.kind == "PERCENT":
                amount = base * d.value / 100 * len(overlap) / len(days)
            else:
                amount = min(d.value * len(overlap) / len(period.days()), base)
        amount = min(amount, left)
        left -= round_money(amount, currency)  # its line's amount: two discounts never round below zero
        label = f"{d.value.normalize():f}%" if d.kind == "PERCENT" else amount_label(d.value, currency)
        partial = f", {len(overlap)}/{len(days)} days" if len(overlap) < len(days) else ""
        out.append(_charge(parts, period, "DISCOUNT", f"{d.description} (-{label}{partial})", -amount,
                           {"discount_id": d.discount_id, "kind": d.kind, "value": str(d.value),
                            "applies_to": d.applies_to, "base": str(base), "days": len(overlap)}))
    return out
