"""Golden rating cases, checked to the cent through the invoice draft (domain only, no stores)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from billing_pipeline.domain.invoicing import draft_invoice
from billing_pipeline.domain.meters import load_meters
from billing_pipeline.domain.periods import Period
from billing_pipeline.domain.plans import MeteredCharge, Plan, load_plans
from billing_pipeline.domain.price_models import Graduated, PerUnit, Tier, Volume
from billing_pipeline.domain.rating import rate_contract_month
from billing_pipeline.domain.terms import ContractTerms

D = Decimal
CATALOG = load_plans(known_meters={m.slug for m in load_meters()})
UTC = timezone.utc


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def bill(plan, usage=None, month="2026-10", start=utc(2026, 1, 1), end=None, tz="UTC", region="GLOBAL",
         price_fixed=None, currency=None):
    terms = ContractTerms("CTR-1", "org_1", region, currency or plan.currency, plan, start, end, tz, price_fixed)
    period = Period.parse_month(month)
    result = rate_contract_month(terms, usage or {}, period)
    return draft_invoice(terms, result.charges, period), result


def lines(draft):
    return [(line.description, line.amount) for line in draft.lines]


PRO = CATALOG["pro"]


@pytest.mark.parametrize("usage, total", [
    ({("requests", "polygon-mainnet"): 5_000_000}, "0.00"),             # exactly the free tier
    ({("requests", "polygon-mainnet"): 5_000_001}, "0.00"),             # one over: 0.00005 rounds to 0.00
    ({("requests", "polygon-mainnet"): 5_000_100}, "0.01"),             # 0.005 rounds half-up
    ({("requests", "polygon-mainnet"): 100_000_000}, "4750.00"),        # top of tier 2
    ({("requests", "polygon-mainnet"): 100_000_001}, "4750.00"),        # + 0.00003
    ({("requests", "polygon-mainnet"): 120_000_000}, "5350.00"),        # 4750 + 20M x 0.00003
    ({("requests", "eth-mainnet"): 100_000_000}, "7125.00"),            # ETH costs 1.5x
    ({("requests", "eth-mainnet"): 50_000_000, ("requests", "bsc-mainnet"): 50_000_000}, "5462.50"),
])
def test_pro_graduated_tiers_and_chain_multipliers(usage, total):
    draft, _ = bill(PRO, usage)
    assert draft.total == D(total)


def test_chain_shares_of_a_tiered_amount():
    draft, result = bill(PRO, {("requests", "eth-mainnet"): 50_000_000, ("requests", "bsc-mainnet"): 50_000_000})
    # tiers on the 100M total give 4750; each chain has half, times its multiplier
    assert lines(draft) == [("BSC Mainnet - 50,000,000 requests", D("1900.00")),
                            ("ETH Mainnet - 50,000,000 requests", D("3562.50"))]
    eth = result.charges[1]
    assert [t["quantity"] for t in eth.details["tiers"]] == ["5000000", "95000000"]
    assert eth.details["chain_multiplier"] == "1.5"


def test_egress_in_decimal_gb():
    draft, _ = bill(PRO, {("egress_bytes", "eth-mainnet"): 45_213_456_789})
    # 45.213456789 GB x 0.09 = 4.06921111101 -> 4.07
    assert lines(draft) == [("ETH Mainnet - Egress 45.2 GB", D("4.07"))]


def test_zero_usage_metered_contract_has_nothing_to_invoice():
    _, result = bill(PRO, {})
    assert result.charges == []


def test_graduated_and_volume_on_the_same_usage():
    tiers = (Tier(up_to=1000, unit_price=D("0.10")), Tier(up_to=None, unit_price=D("0.05")))
    usage = {("requests", "polygon-mainnet"): 1500}
    graduated = Plan(plan_id="g", name="G", type="METERED", currency="USD",
                     charges=[MeteredCharge(meter="requests", unit="request", price=Graduated(tiers=tiers))])
    volume = Plan(plan_id="v", name="V", type="METERED", currency="USD",
                  charges=[MeteredCharge(meter="requests", unit="request", price=Volume(tiers=tiers))])
    assert bill(graduated, usage)[0].total == D("125.00")  # 1000 x 0.10 + 500 x 0.05
    assert bill(volume, usage)[0].total == D("75.00")      # 1500 x 0.05


def test_package_price_rounds_packages_up():
    draft, _ = bill(CATALOG["growth_eur"], {("compute_units", "eth-mainnet"): 1_001_000_001})
    # 1,000,000,000 included; 1,000,001 over = 2 packages of 1M at 0.40
    assert draft.total == D("450.80")


@pytest.mark.parametrize("used, total", [(50_000_000, "500.00"), (50_000_001, "500.00"), (70_000_000, "1500.00")])
def test_hybrid_base_fee_includes_units(used, total):
    draft, _ = bill(CATALOG["growth"], {("requests", "eth-mainnet"): used})
    assert draft.total == D(total)


def test_fixed_turkish_contract_with_kdv_and_usage_shown_at_zero():
    draft, _ = bill(CATALOG["enterprise_tr"], {("requests", "eth-mainnet"): 1_234}, region="TR")
    assert lines(draft) == [("Monthly RPC service - Enterprise TR (2026-10)", D("25000.00")),
                            ("ETH Mainnet - 1,234 requests (included)", D("0.00"))]
    assert (draft.subtotal, draft.tax, draft.total) == (D("25000.00"), D("5000.00"), D("30000.00"))


@pytest.mark.parametrize("kwargs, total", [
    ({"start": utc(2026, 10, 16)}, "6193.55"),                         # 16/31 of 12,000
    ({"end": utc(2026, 10, 11)}, "3870.97"),                           # 10/31
    ({"start": utc(2026, 10, 16), "end": utc(2026, 10, 17)}, "387.10"),  # a single day
    ({"month": "2028-02", "start": utc(2028, 2, 15)}, "6206.90"),      # 15/29 in a leap February
    ({"month": "2027-02", "start": utc(2027, 2, 15)}, "6000.00"),      # 14/28
    # 22:00 UTC on the 15th is already the 16th in Istanbul: 16 days, not 17
    ({"start": utc(2026, 10, 15, 22), "tz": "Europe/Istanbul"}, "6193.55"),
    ({"start": utc(2026, 10, 15, 22), "tz": "UTC"}, "6580.65"),
    ({"start": utc(2026, 11, 1)}, "0.00"),                             # not active in October
])
def test_fixed_fee_prorated_by_days_in_the_contract_timezone(kwargs, total):
    draft, _ = bill(CATALOG["enterprise"], **kwargs)
    assert draft.total == D(total)


def test_yearly_fee_in_the_month_the_contract_year_starts():
    plan = CATALOG["enterprise_yearly"]
    anniversary, _ = bill(plan, start=utc(2025, 10, 1))
    assert lines(anniversary) == [("Yearly RPC service - Enterprise (yearly) (contract year from Oct 2026)",
                                   D("120000.00"))]
    other_month, result = bill(plan, start=utc(2025, 9, 1))
    assert result.charges == []


def test_price_override_on_the_contract():
    draft, _ = bill(CATALOG["enterprise"], price_fixed=D("9999.99"))
    assert draft.total == D("9999.99")


def test_successful_requests_only_plan():
    usage = {("requests", "eth-mainnet"): 1000, ("successful_requests", "eth-mainnet"): 900}
    draft, _ = bill(CATALOG["pro_tr"], usage, region="TR")
    assert lines(draft) == [("ETH Mainnet - 900 successful requests", D("1.53"))]  # 900 x 0.0017
    assert draft.total == D("1.84")  # + 20% KDV 0.306 -> 0.31


def test_each_line_rounded_once_total_is_sum_of_lines():
    plan = Plan(plan_id="p", name="P", type="METERED", currency="USD",
                charges=[MeteredCharge(meter="requests", unit="request", price=PerUnit(unit_price=D("0.015")))])
    usage = {("requests", c): 3 for c in ("eth-mainnet", "bsc-mainnet", "base-mainnet")}
    draft, result = bill(plan, usage)
    assert sum(c.amount for c in result.charges) == D("0.135")  # would round to 0.14
    assert draft.total == D("0.15")                                # 3 x 0.05


def test_zero_decimal_currency():
    plan = Plan(plan_id="jp", name="JP", type="METERED", currency="JPY",
                charges=[MeteredCharge(meter="requests", unit="request", price=PerUnit(unit_price=D("0.5")))])
    assert bill(plan, {("requests", "eth-mainnet"): 3})[0].total == D("2")  # 1.5 JPY -> 2


@pytest.mark.parametrize("used, alert", [(3_999_999, None), (4_000_001, ("SOFT", 4_000_000)),
                                         (5_000_001, ("HARD", 5_000_000))])
def test_usage_caps_alert_and_never_charge(used, alert):
    draft, result = bill(CATALOG["free"], {("requests", "eth-mainnet"): used})
    assert draft.total == D("0.00")
    assert [(a.level, a.cap) for a in result.alerts] == ([alert] if alert else [])


def test_contract_currency_must_match_its_plan():
    with pytest.raises(ValueError, match="contract CTR-1 bills in EUR but its plan pro is priced in USD"):
        bill(PRO, currency="EUR")
