"""Plans: reviewable pricing templates (catalog/plans.yaml), validated before anything is rated."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import BillingError
from .catalog_files import CATALOG_DIR, load_catalog
from .money import minor_units
from .price_models import PriceModel, exact_decimal

_PRICE_TAGS = ("per_unit", "graduated", "volume", "package")
BYTES_PER_GB = 10**9  # decimal GB, as cloud egress is billed


class PlanFileError(BillingError):
    """A plan file is invalid; the message names the file, the plan and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UsageCap(_Model):
    """Alerts only: a cap never changes what is charged."""

    soft: int | None = Field(default=None, gt=0)
    hard: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "UsageCap":
        if self.soft and self.hard and self.soft > self.hard:
            raise ValueError(f"soft cap {self.soft} is above hard cap {self.hard}")
        return self


class MeteredCharge(_Model):
    meter: str
    unit: Literal["request", "GB", "unit"]
    price: PriceModel
    included: int = Field(default=0, ge=0)
    chain_multipliers: dict[str, Decimal] = Field(default_factory=dict)

    @field_validator("chain_multipliers", mode="before")
    @classmethod
    def _exact(cls, value: object) -> object:
        if isinstance(value, dict):
            for chain, factor in value.items():
                try:
                    exact_decimal(factor)
                except ValueError as exc:
                    raise ValueError(f"chain {chain!r}: multiplier {exc}") from None
        return value

    @field_validator("chain_multipliers")
    @classmethod
    def _positive(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for chain, factor in value.items():
            if factor <= 0:
                raise ValueError(f"chain {chain!r}: multiplier {factor} must be positive")
        return value

    def quantity(self, raw: int) -> Decimal:
        """The billed quantity of a meter value: bytes become decimal GB."""
        return Decimal(raw) / BYTES_PER_GB if self.unit == "GB" else Decimal(raw)


class Plan(_Model):
    plan_id: str = Field(pattern=r"^[a-z0-9_]{1,40}$")
    name: str
    type: Literal["METERED", "FIXED", "HYBRID"]
    currency: str
    billing_cycle: Literal["MONTHLY", "YEARLY"] = "MONTHLY"
    base_fee: Decimal = Decimal(0)
    charges: tuple[MeteredCharge, ...] = ()
    usage_caps: dict[str, UsageCap] = Field(default_factory=dict)
    minimum_commitment: Decimal | None = None

    _exact_amounts = field_validator("base_fee", "minimum_commitment", mode="before")(exact_decimal)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        minor_units(value)
        return value

    @model_validator(mode="after")
    def _shape(self) -> "Plan":
        if self.type == "METERED" and self.base_fee:
            raise ValueError("base_fee: a METERED plan has no base fee (use HYBRID)")
        if self.type != "METERED" and self.base_fee <= 0:
            raise ValueError(f"base_fee: a {self.type} plan needs a positive base fee")
        if self.type == "FIXED" and self.charges:
            raise ValueError("charges: a FIXED plan charges no usage (usage is shown at zero price)")
        if self.type == "METERED" and not self.charges:
            raise ValueError("charges: a METERED plan needs at least one metered charge")
        if self.type != "HYBRID" and any(c.included for c in self.charges):
            raise ValueError("charges: only HYBRID plans include units in their base fee")
        if self.type == "HYBRID" and any(c.chain_multipliers for c in self.charges):
            raise ValueError("charges: chain_multipliers apply to METERED plans; a HYBRID overage is one line")
        meters = [c.meter for c in self.charges]
        if len(set(meters)) != len(meters):
            raise ValueError("charges: a meter is priced twice")
        return self


class _PlanFile(_Model):
    plans: tuple[Plan, ...]

    @field_validator("plans")
    @classmethod
    def _unique(cls, plans: tuple[Plan, ...]) -> tuple[Plan, ...]:
        ids = [p.plan_id for p in plans]
        duplicate = next((i for i in ids if ids.count(i) > 1), None)
        if duplicate:
            raise ValueError(f"plan_id {duplicate!r} is declared twice")
        return plans


def load_plans(path: Path | None = None, known_meters: set[str] | None = None) -> dict[str, Plan]:
    """The plans of a plan file, by id; every charge must price a declared meter."""
    path = path or CATALOG_DIR / "plans.yaml"
    # pydantic names the price model's union tag in paths (charges.0.price.graduated.tiers): hidden
    plans = load_catalog(path, _PlanFile, PlanFileError, "plans", "plan_id", "plan", hidden=_PRICE_TAGS).plans
    if known_meters is not None:
        for plan in plans:
            for i, charge in enumerate(plan.charges):
                if charge.meter not in known_meters:
                    raise PlanFileError(f"{path.name}: plan {plan.plan_id!r}, charges.{i}.meter: {charge.meter!r} is "
                                        f"not a declared meter; known: {', '.join(sorted(known_meters))}")
            for meter in plan.usage_caps:
                if meter not in known_meters:
                    raise PlanFileError(f"{path.name}: plan {plan.plan_id!r}, usage_caps: {meter!r} is not a "
                                        "declared meter")
    return {p.plan_id: p for p in plans}
