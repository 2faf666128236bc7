"""Tier math to the last digit: the reference implementation and the vectorized one agree."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pydantic
import pytest

from billing_pipeline.domain.price_models import PriceSpec, price_lines, price_quantities

D = Decimal
TIERS = [{"up_to": 5_000_000, "unit_price": "0"},  # first 5M free
         {"up_to": 100_000_000, "unit_price": "0.00005"},
         {"up_to": None, "unit_price": "0.00003"}]


def model(**price):
    return PriceSpec(price=price).price


GRADUATED = model(type="graduated", tiers=TIERS)
VOLUME = model(type="volume", tiers=TIERS)
PACKAGE = model(type="package", package_size=1_000_000, package_price="40")
PER_UNIT = model(type="per_unit", unit_price="0.000000000001")
FLAT = model(type="graduated", tiers=[{"up_to": 5_000_000}, {"up_to": None, "unit_price": "0.00005", "flat_price": "10"}])


def total(m, q):
    return sum((line.amount for line in price_lines(m, q)), D(0))


@pytest.mark.parametrize("m, quantity, expected, tiers_used", [
    (GRADUATED, 0, "0", [1]),
    (GRADUATED, 5_000_000, "0", [1]),                    # exactly at the free tier's edge
    (GRADUATED, 5_000_001, "0.00005", [1, 2]),           # one unit over
    (GRADUATED, 100_000_000, "4750", [1, 2]),
    (GRADUATED, 100_000_001, "4750.00003", [1, 2, 3]),
    (GRADUATED, 120_000_000, "5350", [1, 2, 3]),
    (VOLUME, 0, "0", [1]),
    (VOLUME, 5_000_000, "0", [1]),
    (VOLUME, 5_000_001, "250.00005", [2]),               # the whole quantity at tier 2
    (VOLUME, 100_000_000, "5000", [2]),
    (VOLUME, 100_000_001, "3000.00003", [3]),             # crossing into a cheaper tier lowers the bill
    (VOLUME, 120_000_000, "3600", [3]),
    (PACKAGE, 0, "0", [1]),
    (PACKAGE, 1, "40", [1]),
    (PACKAGE, 1_000_000, "40", [1]),
    (PACKAGE, 1_000_001, "80", [1]),                     # a started package is paid in full
    (PER_UNIT, 10**12, "1", [1]),                        # 12 decimal places kept exactly
    (FLAT, 5_000_000, "0", [1]),                         # flat fee only when the tier is reached
    (FLAT, 5_000_001, "10.00005", [1, 2]),
])
def test_golden_tier_cases(m, quantity, expected, tiers_used):
    lines = price_lines(m, quantity)
    assert total(m, quantity) == D(expected)
    assert [line.tier for line in lines] == tiers_used


def test_graduated_breakdown_reads_like_an_invoice():
    lines = price_lines(GRADUATED, 120_000_000)
    assert [(l.lower, l.upper, l.quantity, l.unit_price, l.amount) for l in lines] == [
        (0, 5_000_000, 5_000_000, D("0"), D("0")),
        (5_000_000, 100_000_000, 95_000_000, D("0.00005"), D("4750.00000")),
        (100_000_000, None, 20_000_000, D("0.00003"), D("600.00000")),
    ]


@pytest.mark.parametrize("m", [GRADUATED, VOLUME, PACKAGE, PER_UNIT, FLAT], ids=lambda m: m.type)
def test_vectorized_matches_reference(m):
    quantities = [0, 1, 4_999_999, 5_000_000, 5_000_001, 99_999_999, 100_000_000, 100_000_001, 123_456_789,
                  10**12, 999_999, 1_000_000, 1_000_001]
    table = price_quantities(m, pa.array(quantities, pa.int64()))
    got = [(r["row"], r["tier"], r["quantity"], r["unit_price"], r["flat_price"], r["amount"])
           for r in table.to_pylist()]
    expected = [(row, l.tier, l.quantity, l.unit_price, l.flat_price, l.amount)
                for row, q in enumerate(quantities) for l in price_lines(m, q)]
    assert got == expected
    assert table.schema.field("amount").type == pa.decimal128(38, 12)


@pytest.mark.parametrize("price, message", [
    ({"type": "graduated", "tiers": [{"up_to": 10}, {"up_to": 5}, {"up_to": None}]}, "must strictly increase"),
    ({"type": "graduated", "tiers": [{"up_to": 10}]}, "last tier must be open"),
    ({"type": "volume", "tiers": [{"up_to": None}, {"up_to": None}]}, "only the last tier may be open"),
    ({"type": "per_unit", "unit_price": "0.0000000000001"}, "at most 12 decimal places"),
    ({"type": "per_unit", "unit_price": "-1"}, "cannot be negative"),
    ({"type": "package", "package_size": 0, "package_price": "1"}, "package_size"),
    ({"type": "stairstep", "unit_price": "1"}, "does not match any of the expected tags"),
])
def test_invalid_price_models_say_why(price, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        PriceSpec(price=price)


def test_negative_usage_is_refused_with_its_row():
    with pytest.raises(ValueError, match="quantity -3 at row 1 is negative"):
        price_quantities(GRADUATED, pa.array([5, -3], pa.int64()))
    with pytest.raises(ValueError, match="quantity -1 is negative"):
        price_lines(GRADUATED, -1)
