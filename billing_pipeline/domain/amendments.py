"""Amendments: a contract whose terms change during a month is rated part by part."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from .periods import Period
from .plans import Plan
from .terms import ContractTerms, TermsPart, Usage, active_days


@dataclass(frozen=True)
class Amendment:
    effective_from: datetime
    plan: Plan
    price_fixed: Decimal | None = None
    minimum_commitment: Decimal | None = None
    reason: str = ""


def split_month(terms: ContractTerms, amendments: list[Amendment], period: Period) -> list[tuple[ContractTerms, list[date]]]:
    """The month's active days grouped by the terms in force on them (contract's timezone). An
    amendment takes effect on the local day of its ``effective_from``."""
    zone = ZoneInfo(terms.timezone)
    versions: list[tuple[date | None, ContractTerms]] = [(None, terms)]
    for a in sorted(amendments, key=lambda a: a.effective_from):
        versions.append((a.effective_from.astimezone(zone).date(),
                         replace(terms, plan=a.plan, price_fixed=a.price_fixed, minimum_commitment=a.minimum_commitment)))
    parts: list[tuple[ContractTerms, list[date]]] = []
    for day in active_days(terms, period):
        in_force = [t for since, t in versions if since is None or since <= day][-1]
        if parts and parts[-1][0] is in_force:
            parts[-1][1].append(day)
        else:
            parts.append((in_force, [day]))
    return parts


def attach_usage(parts: list[tuple[ContractTerms, list[date]]], daily: dict[date, Usage]) -> list[TermsPart]:
    """Each part with the usage of its days."""
    result = []
    for terms, days in parts:
        usage: Usage = {}
        for day in days:
            for key, value in daily.get(day, {}).items():
                usage[key] = usage.get(key, 0) + value
        result.append(TermsPart(terms, days, usage))
    return result
