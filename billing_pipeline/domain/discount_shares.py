"""A discount on a Turkish e-invoice: spread over the lines it reduces. No I/O here.

Turkish e-invoices (e-Fatura, e-Arsiv) take no negative lines: a discount is an allowance on
the lines it reduces (Parasut's per-line ``discount_type: amount`` / ``discount_value``), and
KDV is computed on each line net of its allowance. So a Turkish draft spreads each discount
line over the lines it applies to, and computes each line's KDV on what is left of it, as
Parasut does; the discount line itself carries no KDV and is not sent.

Rules (also in the README):
- Discounts are spread in line order, each over the positive lines in its reach (``ALL``,
  ``USAGE``: usage and overage, ``BASE_FEE``), in proportion to what is left of them after the
  discounts before it, in whole minor units; the units a proportional split leaves over go to
  the largest remainders, the first line on a tie. The shares add up to the discount exactly
  and never exceed a line.
- What a discount's reach cannot take (an earlier discount on all charges took part of it) goes
  to the other lines, by the same rule: discounts never take a month below zero, so it fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .money import quantum

DISCOUNT = "DISCOUNT"
REACH = {"ALL": {"BASE_FEE", "USAGE", "OVERAGE", "TRUE_UP"}, "USAGE": {"USAGE", "OVERAGE"},
         "BASE_FEE": {"BASE_FEE"}}


@dataclass(frozen=True)
class ShareableLine:
    line_no: int
    kind: str  # the rated charge's kind: BASE_FEE, USAGE, OVERAGE, TRUE_UP, DISCOUNT
    amount: Decimal  # rounded; a discount's is negative
    applies_to: str | None = None  # a discount's reach: ALL, USAGE, BASE_FEE


def _spread(total: int, weights: dict[int, int]) -> dict[int, int]:
    """``total`` units split in proportion to ``weights`` (all in units, total <= their sum)."""
    whole = sum(weights.values())
    parts = {n: total * w // whole for n, w in weights.items()}
    leftover = total - sum(parts.values())
    by_remainder = sorted(weights, key=lambda n: (-(total * weights[n] % whole), n))
    for n in by_remainder[:leftover]:
        parts[n] += 1
    return parts


def discount_shares(lines: list[ShareableLine], currency: str) -> dict[int, Decimal]:
    """Each line's share of the discounts, by line number (lines with no share left out)."""
    unit = quantum(currency)
    left = {x.line_no: int(x.amount / unit) for x in lines if x.kind != DISCOUNT and x.amount > 0}
    kinds = {x.line_no: x.kind for x in lines}
    taken = dict.fromkeys(left, 0)
    for d in (x for x in lines if x.kind == DISCOUNT):
        if d.amount > 0:
            raise ValueError(f"line {d.line_no}: a discount of {d.amount} {currency} is positive")
        if d.applies_to is not None and d.applies_to not in REACH:
            raise ValueError(f"line {d.line_no}: a discount applies to {d.applies_to!r}; known: {sorted(REACH)}")
        wanted = int(-d.amount / unit)
        reach = REACH[d.applies_to or "ALL"]
        for pool in ([n for n in left if kinds[n] in reach], list(left)):
            weights = {n: left[n] for n in pool if left[n] > 0}
            take = min(wanted, sum(weights.values()))
            if take <= 0:
                continue
            for n, part in _spread(take, weights).items():
                taken[n] += part
                left[n] -= part
            wanted -= take
        if wanted:
            raise ValueError(f"line {d.line_no}: a discount of {d.amount} {currency} exceeds the lines left to "
                             f"reduce by {wanted * unit} {currency}")
    return {n: units * unit for n, units in taken.items() if units}
