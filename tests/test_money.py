from decimal import Decimal

import pytest

from billing_pipeline.domain.money import (UnknownCurrencyError, check_unit_price, round_money, to_minor_units)


@pytest.mark.parametrize("amount, currency, expected", [
    ("0.005", "USD", "0.01"),      # half-up, not banker's (which gives 0.00)
    ("0.015", "USD", "0.02"),
    ("0.025", "EUR", "0.03"),      # banker's would give 0.02
    ("0.0049999", "USD", "0.00"),
    ("-0.005", "USD", "-0.01"),    # away from zero on a tie, for credits too
    ("2.5", "JPY", "3"),           # zero-decimal currency
    ("1.0005", "KWD", "1.001"),    # three-decimal currency
    ("12345.675", "TRY", "12345.68"),
])
def test_round_half_up_to_minor_unit(amount, currency, expected):
    rounded = round_money(Decimal(amount), currency)
    assert rounded == Decimal(expected)
    assert str(rounded) == expected  # the exponent is the currency's minor unit


def test_float_money_is_refused():
    with pytest.raises(TypeError, match="money must be Decimal, got float"):
        round_money(0.1, "USD")


def test_unknown_currency_is_named():
    with pytest.raises(UnknownCurrencyError, match="currency 'XYZ' has no ISO 4217 minor unit"):
        round_money(Decimal("1"), "XYZ")


def test_minor_units_for_stripe():
    assert to_minor_units(Decimal("12.34"), "USD") == 1234
    assert to_minor_units(Decimal("500"), "JPY") == 500
    with pytest.raises(ValueError, match="not rounded"):
        to_minor_units(Decimal("12.345"), "USD")


def test_unit_price_precision_limit():
    assert check_unit_price(Decimal("0.000000000001")) == Decimal("0.000000000001")
    with pytest.raises(ValueError, match="more than 12 decimal places"):
        check_unit_price(Decimal("0.0000000000001"), "pro rate")
