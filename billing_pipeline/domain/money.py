"""Money as Decimal, rounded once per invoice line to the currency's ISO 4217 minor unit.

Rounding policy (also in the README):
- quantities and unit prices are exact Decimals; unit prices keep up to 12 decimal places;
- a rated charge keeps its unrounded amount (quantity x unit price, exact);
- each invoice line is rounded once, half-up (away from zero on a tie), to the minor unit;
- the invoice subtotal is the sum of the rounded lines, tax is rounded half-up once on the
  subtotal (Turkish KDV: once per line, on the line less its whole-kurus share of the discounts,
  as the e-invoice does; domain/invoicing.py, domain/discount_shares.py), and the total is
  subtotal + tax. No amount is ever rounded twice;
- a discount or a commitment true-up is computed on the rounded lines it refers to, as the
  customer reads them, and is then a line rounded once itself (domain/adjustments.py).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# ISO 4217 minor units for the currencies the product bills in or converts from. A currency
# missing here is refused rather than guessed.
MINOR_UNITS: dict[str, int] = {
    "USD": 2,
    "EUR": 2,
    "TRY": 2,
    "GBP": 2,
    "CHF": 2,
    "JPY": 0,
    "KRW": 0,
    "BHD": 3,
    "KWD": 3,
}

UNIT_PRICE_PLACES = 12


class UnknownCurrencyError(ValueError):
    pass


def minor_units(currency: str) -> int:
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        raise UnknownCurrencyError(
            f"currency {currency!r} has no ISO 4217 minor unit configured; known: {sorted(MINOR_UNITS)}"
        ) from None


def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-minor_units(currency))


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round half-up to the currency's minor unit (0.005 USD -> 0.01, 0.5 JPY -> 1)."""
    if not isinstance(amount, Decimal):
        raise TypeError(f"money must be Decimal, got {type(amount).__name__}: {amount!r}")
    return amount.quantize(quantum(currency), rounding=ROUND_HALF_UP)


def to_minor_units(amount: Decimal, currency: str) -> int:
    """An already-rounded amount as an integer count of minor units (what Stripe expects)."""
    rounded = round_money(amount, currency)
    if rounded != amount:
        raise ValueError(f"{amount} {currency} is not rounded to the minor unit")
    return int(rounded.scaleb(minor_units(currency)))


def from_minor_units(minor: int, currency: str) -> Decimal:
    """An integer count of minor units (what Stripe returns) as an amount: 1234 USD -> 12.34."""
    return Decimal(minor).scaleb(-minor_units(currency))


def check_unit_price(price: Decimal, field: str = "unit_price") -> Decimal:
    if not isinstance(price, Decimal):
        raise TypeError(f"{field} must be Decimal, got {type(price).__name__}")
    exponent = price.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > UNIT_PRICE_PLACES:
        raise ValueError(f"{field} {price} has more than {UNIT_PRICE_PLACES} decimal places")
    return price
