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


def test_amounts_shown_in_dagster_metadata_are_plain_decimals():
    """rated_charges' metadata showed 450 EUR as 4.5E+2 and a 25,000 unit price as 2.5E+4."""
    from billing_pipeline.assets.rated_charges import shown
    from billing_pipeline.assets.reporting import money_text

    assert [str(shown(Decimal(v))) for v in ("450.000000", "25000", "0.0155000", "0.00000049", "0")] == [
        "450", "25000", "0.0155", "0", "0"]  # to the millionth, as before
    assert money_text({"EUR": shown(Decimal("450.0000")), "USD": shown(Decimal("120000"))}) == "450 EUR, 120,000 USD"
