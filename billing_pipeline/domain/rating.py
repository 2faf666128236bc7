"""Rating: one contract's billing month priced by its plan, unrounded, with its working shown.

Rules (also in the README):
- Metered charge: the month's quantity of the meter over all chains is priced by the charge's
  price model (tiers apply to the total); each chain's line gets its share of that amount,
  scaled by the chain's multiplier: amount(chain) = A x quantity(chain) x multiplier / quantity.
- Hybrid: units up to ``included`` are paid by the base fee; the rest is priced as overage.
- Fixed and hybrid base fees are prorated by the days the contract is active in the month,
  counted in the contract's timezone. A yearly fee is charged in the month its contract year
  starts. Fixed contracts show their usage as zero-priced lines.
- Usage caps raise alerts, never charges.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal, localcontext
from zoneinfo import ZoneInfo

from .adjustments import apply_discounts, true_up
from .chains import chain_display_name
from .periods import Period
from .plans import MeteredCharge
from .price_models import price_lines
from .terms import ContractMonth, ContractTerms, Kind, RatedCharge, TermsPart, Usage, UsageAlert, active_days

def _fmt_quantity(quantity: Decimal, unit: str) -> str:
    if unit == "GB":
        return f"{quantity.quantize(Decimal('0.1')) if quantity >= Decimal('0.1') else quantity.normalize():,} GB"
    return f"{int(quantity):,}"


def _label(charge: MeteredCharge) -> str:
    return {"requests": "requests", "successful_requests": "successful requests",
            "egress_bytes": "egress"}.get(charge.meter, charge.meter.replace("_", " "))


def _line_text(chain: str, charge: MeteredCharge, quantity: Decimal) -> str:
    if charge.unit == "GB":
        return f"{chain_display_name(chain)} - {_label(charge).capitalize()} {_fmt_quantity(quantity, 'GB')}"
    return f"{chain_display_name(chain)} - {_fmt_quantity(quantity, charge.unit)} {_label(charge)}"


def _tiers(lines) -> list[dict]:
    return [{"tier": t.tier, "from": t.lower, "up_to": t.upper, "quantity": str(t.quantity),
             "unit_price": str(t.unit_price), "flat_price": str(t.flat_price), "amount": str(t.amount)}
            for t in lines]


def rate_contract_month(terms: ContractTerms, usage: Usage, period: Period,
                        discounts: tuple = ()) -> ContractMonth:
    """A month under one set of terms."""
    return rate_month_parts([TermsPart(terms, active_days(terms, period), usage)], period, discounts)


def rate_month_parts(parts: list[TermsPart], period: Period, discounts: tuple = ()) -> ContractMonth:
    """A month made of parts, each rated by its own terms; then the commitment true-up and the
    discounts apply to the month as a whole."""
    charges: list[RatedCharge] = []
    many = len(parts) > 1
    for i, part in enumerate(parts, start=1):
        if not part.days:
            continue
        prefix = f"{part.terms.contract_id}:{period.label}" + (f":p{i}" if many else "")
        suffix = f" ({part.days[0]:%d %b}-{part.days[-1]:%d %b})" if many else ""
        charges += _rate_part(part, period, prefix, suffix)
    charges += true_up(parts, period, charges)
    charges += apply_discounts(parts, period, charges, discounts)
    last = parts[-1].terms
    usage: Usage = {}
    for part in parts:
        for key, value in part.usage.items():
            usage[key] = usage.get(key, 0) + value
    return ContractMonth(charges, _alerts(last, usage))


def _rate_part(part: TermsPart, period: Period, prefix: str, suffix: str) -> list[RatedCharge]:
    terms, usage, plan = part.terms, part.usage, part.terms.plan
    charges: list[RatedCharge] = []

    def add(kind: Kind, chain, meter, description, quantity, unit_price, amount, details=None):
        key = ":".join(p for p in (prefix, kind, meter, chain) if p)
        # a prorated base fee already names its days
        text = description if kind == "BASE_FEE" else description + suffix
        charges.append(RatedCharge(key, terms.contract_id, kind, chain, meter, text,
                                   Decimal(quantity), unit_price, amount, terms.currency, details or {}, plan.plan_id))

    if plan.type in ("FIXED", "HYBRID"):
        _base_fee(terms, period, part.days, add)

    for charge in plan.charges:
        per_chain = {chain: charge.quantity(v) for (meter, chain), v in sorted(usage.items()) if meter == charge.meter}
        total = sum(per_chain.values(), Decimal(0))
        if plan.type == "HYBRID":
            for chain, q in per_chain.items():
                add("USAGE_INFO", chain, charge.meter, _line_text(chain, charge, q) + " (included)", q, Decimal(0),
                    Decimal(0))
            billable = max(Decimal(0), total - charge.included)
            lines = price_lines(charge.price, billable)
            amount = sum((t.amount for t in lines), Decimal(0))
            add("OVERAGE", None, charge.meter,
                f"Overage - {_fmt_quantity(billable, charge.unit)} {_label(charge)} beyond "
                f"{_fmt_quantity(Decimal(charge.included), charge.unit)} included",
                billable, amount / billable if billable else Decimal(0), amount,
                {"used": str(total), "included": charge.included, "tiers": _tiers(lines)})
            continue
        lines = price_lines(charge.price, total)
        amount = sum((t.amount for t in lines), Decimal(0))
        tiers = _tiers(lines)  # the same for every chain's line
        with localcontext() as ctx:
            ctx.prec = 60  # the share of a tiered amount is exact to far beyond any minor unit
            for chain, q in per_chain.items():
                factor = charge.chain_multipliers.get(chain, Decimal(1))
                share = amount * q * factor / total if total else Decimal(0)
                add("USAGE", chain, charge.meter, _line_text(chain, charge, q), q,
                    share / q if q else Decimal(0), share,
                    {"meter_total": str(total), "chain_multiplier": str(factor), "tiers": tiers})

    if plan.type == "FIXED":
        for (meter, chain), value in sorted(usage.items()):
            if meter == "requests":
                q = Decimal(value)
                add("USAGE_INFO", chain, meter, f"{chain_display_name(chain)} - {int(q):,} requests (included)", q,
                    Decimal(0), Decimal(0))
    return charges


def _base_fee(terms: ContractTerms, period: Period, days: list[date], add) -> None:
    plan, fee = terms.plan, terms.base_fee
    label = "Monthly RPC service" if plan.type == "FIXED" else "Monthly base fee"
    if plan.billing_cycle == "YEARLY":
        zone = ZoneInfo(terms.timezone)
        start = terms.start_at.astimezone(zone).date()
        if start.month != period.start.month:
            return  # paid in the month its contract year starts
        add("BASE_FEE", None, None, f"Yearly RPC service - {plan.name} (contract year from {period.start:%b %Y})",
            1, fee, fee, {"billing_cycle": "YEARLY"})
        return
    in_month = len(period.days())
    if len(days) == in_month:
        add("BASE_FEE", None, None, f"{label} - {plan.name} ({period.label})", 1, fee, fee)
        return
    with localcontext() as ctx:
        ctx.prec = 60
        amount = fee * len(days) / in_month
    add("BASE_FEE", None, None,
        f"{label} - {plan.name} ({period.label}, {len(days)}/{in_month} days from {days[0]:%d %b} to {days[-1]:%d %b})",
        1, amount, amount,
        {"prorated_days": len(days), "days_in_month": in_month, "full_fee": str(fee), "timezone": terms.timezone})


def _alerts(terms: ContractTerms, usage: Usage) -> list[UsageAlert]:
    alerts = []
    for meter, cap in terms.plan.usage_caps.items():
        used = sum(v for (m, _), v in usage.items() if m == meter)
        if cap.hard and used > cap.hard:
            alerts.append(UsageAlert(terms.contract_id, meter, "HARD", cap.hard, used))
        elif cap.soft and used > cap.soft:
            alerts.append(UsageAlert(terms.contract_id, meter, "SOFT", cap.soft, used))
    return alerts
