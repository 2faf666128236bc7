"""Rating: turn a contract's monthly usage into rated charges.

This is the plain engine of the month-close milestone: one per-request price per plan, a fixed
monthly fee, and hybrid base-plus-overage. Amounts stay unrounded here; invoicing rounds each line
once (see money.py for the policy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from .chains import chain_display_name
from .money import check_unit_price, minor_units
from .periods import Period

ContractType = Literal["METERED", "FIXED", "HYBRID"]
CONTRACT_TYPES: tuple[str, ...] = ("METERED", "FIXED", "HYBRID")


@dataclass(frozen=True)
class ContractTerms:
    contract_id: str
    org_id: str
    contract_type: ContractType
    currency: str
    region: str
    plan_id: str
    plan_name: str
    rate_per_unit: Decimal  # price of one request
    included_units: int  # requests included in the base fee (hybrid)
    base_fee: Decimal  # monthly fee (fixed and hybrid)

    def __post_init__(self) -> None:
        if self.contract_type not in CONTRACT_TYPES:
            raise ValueError(f"contract {self.contract_id}: contract_type {self.contract_type!r} not in {CONTRACT_TYPES}")
        minor_units(self.currency)  # refuses unknown currencies early, naming them
        check_unit_price(self.rate_per_unit, f"contract {self.contract_id} rate_per_unit")
        if self.included_units < 0:
            raise ValueError(f"contract {self.contract_id}: included_units is negative")


@dataclass(frozen=True)
class ChainUsage:
    chain: str
    requests: int
    successful_requests: int = 0
    bytes_out: int = 0


@dataclass(frozen=True)
class RatedCharge:
    charge_id: str  # stable across re-runs: contract, period, kind and chain
    contract_id: str
    kind: Literal["BASE_FEE", "USAGE", "OVERAGE", "USAGE_INFO"]
    chain: str | None
    meter: str | None
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal  # exact, unrounded
    currency: str
    details: dict = field(default_factory=dict)


def _requests_text(n: int) -> str:
    return f"{n:,} requests"


def rate_contract(terms: ContractTerms, usage: list[ChainUsage], period: Period) -> list[RatedCharge]:
    """Rated charges of one contract for one period, in a stable order."""
    usage = sorted(usage, key=lambda u: u.chain)
    prefix = f"{terms.contract_id}:{period.label}"
    charges: list[RatedCharge] = []

    def charge(kind, chain, meter, description, quantity, unit_price, details=None):
        amount = Decimal(quantity) * unit_price
        key = f"{prefix}:{kind}" + (f":{chain}" if chain else "")
        charges.append(
            RatedCharge(key, terms.contract_id, kind, chain, meter, description, Decimal(quantity),
                        unit_price, amount, terms.currency, details or {})
        )

    if terms.contract_type in ("FIXED", "HYBRID"):
        label = "Monthly RPC service" if terms.contract_type == "FIXED" else "Monthly base fee"
        charge("BASE_FEE", None, None, f"{label} - {terms.plan_name} ({period.label})", 1, terms.base_fee)

    if terms.contract_type == "METERED":
        for u in usage:
            charge("USAGE", u.chain, "requests", f"{chain_display_name(u.chain)} - {_requests_text(u.requests)}",
                   u.requests, terms.rate_per_unit)
    else:
        # Fixed and hybrid contracts still show what was used, priced at zero, for SLA proof.
        for u in usage:
            charge("USAGE_INFO", u.chain, "requests",
                   f"{chain_display_name(u.chain)} - {_requests_text(u.requests)} (included)",
                   u.requests, Decimal(0))

    if terms.contract_type == "HYBRID":
        used = sum(u.requests for u in usage)
        overage = max(0, used - terms.included_units)
        charge("OVERAGE", None, "requests",
               f"Overage - {_requests_text(overage)} beyond {terms.included_units:,} included",
               overage, terms.rate_per_unit, {"used": used, "included": terms.included_units})
    return charges
