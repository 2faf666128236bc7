"""The inputs and outputs of rating: contract terms, usage, rated charges and alerts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from .money import minor_units
from .periods import Period
from .plans import Plan

Kind = Literal["BASE_FEE", "USAGE", "OVERAGE", "USAGE_INFO", "TRUE_UP", "DISCOUNT"]


@dataclass(frozen=True)
class ContractTerms:
    contract_id: str
    org_id: str
    region: str
    currency: str
    plan: Plan
    start_at: datetime
    end_at: datetime | None = None  # end of coverage: None while open-ended or auto-renewing
    timezone: str = "UTC"
    price_fixed: Decimal | None = None  # overrides the plan's base fee
    minimum_commitment: Decimal | None = None  # overrides the plan's monthly spend floor

    def __post_init__(self) -> None:
        minor_units(self.currency)
        if self.currency != self.plan.currency:
            raise ValueError(f"contract {self.contract_id} bills in {self.currency} but its plan "
                             f"{self.plan.plan_id} is priced in {self.plan.currency}")
        ZoneInfo(self.timezone)  # an unknown zone fails here, naming itself

    @property
    def base_fee(self) -> Decimal:
        return self.price_fixed if self.price_fixed is not None else self.plan.base_fee

    @property
    def commitment(self) -> Decimal | None:
        return self.minimum_commitment if self.minimum_commitment is not None else self.plan.minimum_commitment


@dataclass(frozen=True)
class RatedCharge:
    charge_id: str  # stable across re-runs: contract, period, kind, meter and chain
    contract_id: str
    kind: Kind
    chain: str | None
    meter: str | None
    description: str
    quantity: Decimal
    unit_price: Decimal  # the effective price of one unit (amount / quantity for tiered lines)
    amount: Decimal  # exact, unrounded
    currency: str
    details: dict = field(default_factory=dict)
    plan_id: str | None = None  # the plan in force on the charge's days (an amendment changes it mid-month)


@dataclass(frozen=True)
class UsageAlert:
    contract_id: str
    meter: str
    level: Literal["SOFT", "HARD"]
    cap: int
    used: int


@dataclass(frozen=True)
class ContractMonth:
    charges: list[RatedCharge]
    alerts: list[UsageAlert]


Usage = dict[tuple[str, str], int]  # (meter, chain) -> the value of the meter over some days


@dataclass(frozen=True)
class TermsPart:
    """Some days of a month and the terms in force on them (a month has several parts when the
    contract was amended during it)."""

    terms: ContractTerms
    days: list[date]  # calendar days of the contract's timezone
    usage: Usage


def active_days(terms: ContractTerms, period: Period) -> list[date]:
    """The days of the period (calendar days of the contract's timezone) the contract covers."""
    zone = ZoneInfo(terms.timezone)
    first = terms.start_at.astimezone(zone).date()
    last = terms.end_at.astimezone(zone).date() if terms.end_at else None  # exclusive
    return [d for d in period.days() if d >= first and (last is None or d < last)]
