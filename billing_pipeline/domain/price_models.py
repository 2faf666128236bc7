"""Price models for metered usage: per unit, graduated tiers, volume tiers and packages.

A price model turns a quantity for one billing period into priced tier lines. Tiers are given by
their inclusive upper bound (``up_to``, in units; the last tier is open, ``up_to: null``):

- graduated: each unit is priced by the tier it falls in (first 5M at 0, next 95M at 0.00005 ...);
- volume: every unit is priced by the single tier the total falls in;
- package: units are sold in packages of ``package_size``; a started package is paid in full.

A tier may also carry a flat price, charged once when any unit falls in it (graduated) or when the
total falls in it (volume). ``price_lines`` is the readable reference for one quantity;
``price_quantities`` prices a whole column of quantities with Arrow compute kernels (no Python loop
per row) and must agree with it to the last digit.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Annotated, Literal, Union

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .money import UNIT_PRICE_PLACES

_AMOUNT = pa.decimal256(30, UNIT_PRICE_PLACES)  # price x int64 quantity fits in decimal256
_RESULT = pa.decimal128(38, UNIT_PRICE_PLACES)


def _price(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError("a price cannot be negative")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > UNIT_PRICE_PLACES:
        raise ValueError(f"a price keeps at most {UNIT_PRICE_PLACES} decimal places")
    return value


def exact_decimal(value: object) -> object:
    """Before a price or factor becomes a Decimal: an unquoted YAML number with a fraction is a
    binary float, which may already have lost digits that were written, so it is refused."""
    if isinstance(value, float):
        raise ValueError(f"{value!r} is read as a float, which may not hold every digit written; "
                         'quote the number as written (e.g. "0.00005")')
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(_Model):
    up_to: int | None = Field(default=None, gt=0)
    unit_price: Decimal = Decimal(0)
    flat_price: Decimal = Decimal(0)

    _exact_prices = field_validator("unit_price", "flat_price", mode="before")(exact_decimal)
    _check_prices = field_validator("unit_price", "flat_price")(_price)


def _check_tiers(tiers: tuple[Tier, ...]) -> tuple[Tier, ...]:
    if not tiers:
        raise ValueError("at least one tier is required")
    if tiers[-1].up_to is not None:
        raise ValueError("the last tier must be open (up_to: null)")
    bounds = [t.up_to for t in tiers[:-1]]
    if None in bounds:
        raise ValueError("only the last tier may be open (up_to: null)")
    if any(upper <= lower for lower, upper in zip(bounds, bounds[1:])):
        raise ValueError(f"tier bounds (up_to) must strictly increase, got {bounds}")
    return tiers


class PerUnit(_Model):
    type: Literal["per_unit"] = "per_unit"
    unit_price: Decimal

    _exact_price = field_validator("unit_price", mode="before")(exact_decimal)
    _check_price = field_validator("unit_price")(_price)


class Graduated(_Model):
    type: Literal["graduated"] = "graduated"
    tiers: tuple[Tier, ...]

    _check = field_validator("tiers")(_check_tiers)


class Volume(_Model):
    type: Literal["volume"] = "volume"
    tiers: tuple[Tier, ...]

    _check = field_validator("tiers")(_check_tiers)


class Package(_Model):
    type: Literal["package"] = "package"
    package_size: int = Field(gt=0)
    package_price: Decimal

    _exact_price = field_validator("package_price", mode="before")(exact_decimal)
    _check_price = field_validator("package_price")(_price)


PriceModel = Annotated[Union[PerUnit, Graduated, Volume, Package], Field(discriminator="type")]


class PriceSpec(_Model):
    """Wrapper so a price model can be validated on its own: ``PriceSpec(price={...}).price``."""

    price: PriceModel


@dataclass(frozen=True)
class TierLine:
    tier: int  # 1-based; 1 for per-unit and package prices
    lower: int  # first unit of the tier (0-based count of units before it)
    upper: int | None  # tier's up_to
    quantity: int | Decimal  # units priced in this tier (packages for a package price)
    unit_price: Decimal
    flat_price: Decimal
    amount: Decimal  # quantity x unit_price + flat_price, exact


def _tier_bounds(tiers: tuple[Tier, ...]) -> list[tuple[int, int | None, Tier]]:
    lower = 0
    bounds = []
    for tier in tiers:
        bounds.append((lower, tier.up_to, tier))
        lower = tier.up_to or lower
    return bounds


def price_lines(model: PerUnit | Graduated | Volume | Package, quantity: int | Decimal) -> list[TierLine]:
    """The priced lines of one quantity: the reference implementation, one tier at a time.

    Quantities may be fractional (decimal GB); tier bounds are in the same unit."""
    if quantity < 0:
        raise ValueError(f"quantity {quantity} is negative")
    if isinstance(model, PerUnit):
        return [TierLine(1, 0, None, quantity, model.unit_price, Decimal(0), quantity * model.unit_price)]
    if isinstance(model, Package):
        packages = int((Decimal(quantity) / model.package_size).to_integral_value(rounding=ROUND_CEILING))
        return [TierLine(1, 0, None, packages, model.package_price, Decimal(0), packages * model.package_price)]
    lines = []
    for i, (lower, upper, tier) in enumerate(_tier_bounds(model.tiers), start=1):
        if isinstance(model, Graduated):
            in_tier = max(0, (quantity if upper is None else min(quantity, upper)) - lower)
            if in_tier == 0 and not (quantity == 0 and i == 1):
                continue
            flat = tier.flat_price if in_tier > 0 else Decimal(0)
            lines.append(TierLine(i, lower, upper, in_tier, tier.unit_price, flat, in_tier * tier.unit_price + flat))
        elif upper is None or quantity <= upper:  # Volume: all units at the tier the total falls in
            flat = tier.flat_price if quantity > 0 else Decimal(0)
            return [TierLine(i, lower, upper, quantity, tier.unit_price, flat, quantity * tier.unit_price + flat)]
    return lines


def price_quantities(model: PerUnit | Graduated | Volume | Package, quantities: pa.Array) -> pa.Table:
    """Price a column of quantities at once. Returns one row per (input row, tier used):
    ``row`` (index into ``quantities``), ``tier``, ``quantity``, ``unit_price``, ``flat_price``,
    ``amount`` (decimal128(38, 12), exact). Rows with zero usage keep a zero line in tier 1."""
    q = pc.cast(quantities, pa.int64())
    if pc.any(pc.less(q, 0)).as_py():
        first = pc.index(pc.less(q, 0), True).as_py()
        raise ValueError(f"quantity {q[first].as_py()} at row {first} is negative")
    rows = pa.array(range(len(q)), pa.int64())
    if isinstance(model, PerUnit):
        return _lines(rows, 1, q, model.unit_price, None)
    if isinstance(model, Package):
        packages = pc.divide(pc.add(q, model.package_size - 1), model.package_size)  # integer ceil
        return _lines(rows, 1, packages, model.package_price, None)
    parts = []
    for i, (lower, upper, tier) in enumerate(_tier_bounds(model.tiers), start=1):
        if isinstance(model, Graduated):
            top = q if upper is None else pc.min_element_wise(q, upper)
            in_tier = pc.max_element_wise(pc.subtract(top, lower), 0)
            used = pc.greater(in_tier, 0)
            keep = pc.or_(used, pc.equal(q, 0)) if i == 1 else used
        else:
            above = pc.greater(q, lower) if i > 1 else pa.scalar(True)
            within = pa.scalar(True) if upper is None else pc.less_equal(q, upper)
            keep = pc.and_(above, within)
            in_tier, used = q, pc.greater(q, 0)
        flat = tier.flat_price if tier.flat_price else None
        part = _lines(rows, i, in_tier, tier.unit_price, (flat, used) if flat else None)
        parts.append(part.filter(keep))
    table = pa.concat_tables(parts)
    return table.take(pc.sort_indices(table, [("row", "ascending"), ("tier", "ascending")]))


def _lines(rows: pa.Array, tier: int, quantity: pa.Array, unit_price: Decimal, flat) -> pa.Table:
    amount = pc.multiply(pc.cast(quantity, pa.decimal256(20, 0)), pa.scalar(unit_price, _AMOUNT))
    if flat is None:
        flat_column = pa.repeat(pa.scalar(Decimal(0), _RESULT), len(rows))
    else:
        flat_price, used = flat
        flat_column = pc.if_else(used, pa.scalar(flat_price, _RESULT), pa.scalar(Decimal(0), _RESULT))
        amount = pc.add(amount, pc.cast(flat_column, _AMOUNT))
    return pa.table({
        "row": rows,
        "tier": pa.repeat(pa.scalar(tier, pa.int32()), len(rows)),
        "quantity": pc.cast(quantity, pa.int64()),
        "unit_price": pa.repeat(pa.scalar(unit_price, _RESULT), len(rows)),
        "flat_price": flat_column,
        "amount": pc.cast(amount, _RESULT),
    })

