"""Golden cases for commitments, discounts, prepaid credit and amendments inside a month."""

from __future__ import annotations

from datetime import date
import pytest

from billing_pipeline.domain.adjustments import Discount
from billing_pipeline.domain.amendments import Amendment, attach_usage, split_month
from billing_pipeline.domain.invoicing import draft_invoice
from billing_pipeline.domain.periods import Period
from billing_pipeline.domain.rating import rate_contract_month, rate_month_parts
from billing_pipeline.domain.terms import ContractTerms
from test_rating import CATALOG, D, utc

OCT = Period.parse_month("2026-10")


def terms(plan_id, **kw):
    plan = CATALOG[plan_id]
    return ContractTerms("CTR-1", "org_1", kw.pop("region", "GLOBAL"), plan.currency, plan,
                         kw.pop("start", utc(2026, 1, 1)), kw.pop("end", None), kw.pop("tz", "UTC"), **kw)


def total(t, usage=None, discounts=(), credit=D(0)):
    month = rate_contract_month(t, usage or {}, OCT, discounts)
    return draft_invoice(t, month.charges, OCT, credit)


def pct(value, applies_to="ALL", valid_from=date(2026, 1, 1), valid_to=None, discount_id="D1"):
    return Discount(discount_id, "PERCENT", D(value), applies_to, valid_from, valid_to, "Launch discount")


@pytest.mark.parametrize("usage, expected", [
    (10_000_000, "250.00"),   # spend 250 is above the 100 commitment: no true-up
    (6_000_000, "100.00"),    # spend 50: true-up of 50
    (0, "100.00"),            # nothing used: the commitment is still due
])
def test_minimum_commitment_true_up(usage, expected):
    t = terms("pro", minimum_commitment=D(100))
    draft = total(t, {("requests", "polygon-mainnet"): usage} if usage else {})
    assert draft.total == D(expected)


def test_commitment_prorated_for_a_partial_month():
    draft = total(terms("pro", minimum_commitment=D(100), start=utc(2026, 10, 16)))
    assert [(line.description, line.amount) for line in draft.lines] == [
        ("Minimum commitment true-up (100.00 USD per month)", D("51.61"))]  # 16/31 of 100


@pytest.mark.parametrize("discounts, expected", [
    ((pct(10),), "10800.00"),
    ((pct(10, valid_from=date(2026, 10, 21)),), "11574.19"),           # 11 of 31 days: 425.81 off
    ((pct(10, valid_to=date(2026, 10, 1)),), "12000.00"),              # expired before the month
    ((Discount("F", "FIXED", D("500"), "ALL", date(2026, 1, 1), None, "Loyalty"),), "11500.00"),
    ((Discount("F", "FIXED", D("20000"), "ALL", date(2026, 1, 1), None, "Goodwill"),), "0.00"),  # never below 0
    ((pct(10, discount_id="A"), pct(5, discount_id="B")), "10200.00"),  # both on the undiscounted base
])
def test_discounts_with_validity_windows(discounts, expected):
    assert total(terms("enterprise"), discounts=discounts).total == D(expected)


def test_amounts_in_line_descriptions_are_in_the_currencys_minor_units():
    """Customers read these on Stripe and Parasut lines: the database's scale (numeric(20,6):
    "Fee cut (-1,000.000000 TRY, ...)") was printed as it was."""
    fee_cut = Discount("F", "FIXED", D("1000.000000"), "BASE_FEE", date(2026, 10, 17), None, "Fee cut")
    odd = Discount("G", "FIXED", D("0.505000"), "ALL", date(2026, 1, 1), None, "Goodwill")
    draft = total(terms("enterprise_tr", region="TR"), discounts=(fee_cut, odd))
    assert [line.description for line in draft.lines[-2:]] == ["Fee cut (-1,000.00 TRY, 15/31 days)",
                                                               "Goodwill (-0.505 TRY)"]
    draft = total(terms("pro", minimum_commitment=D("60.0000")))
    assert draft.lines[-1].description == "Minimum commitment true-up (60.00 USD per month)"


def test_usage_only_discount_on_a_hybrid():
    draft = total(terms("growth"), {("requests", "eth-mainnet"): 70_000_000}, (pct(10, applies_to="USAGE"),))
    assert draft.total == D("1400.00")  # 500 + 1000 overage - 100
    assert draft.lines[-1].description == "Launch discount (-10%)"


@pytest.mark.parametrize("credit, applied, due", [("100", "100.00", "29900.00"), ("50000", "30000.00", "0.00")])
def test_prepaid_credit_applies_after_tax_and_never_below_zero(credit, applied, due):
    draft = total(terms("enterprise_tr", region="TR"), credit=D(credit))
    assert (draft.subtotal, draft.tax) == (D("25000.00"), D("5000.00"))
    assert (draft.credits_applied, draft.total) == (D(applied), D(due))


def test_plan_upgrade_mid_month_rates_each_part_by_its_own_terms():
    base = terms("pro")
    upgrade = Amendment(utc(2026, 10, 15), CATALOG["enterprise"], reason="upgrade to Enterprise")
    parts = split_month(base, [upgrade], OCT)
    assert [(p[0].plan.plan_id, len(p[1])) for p in parts] == [("pro", 14), ("enterprise", 17)]
    daily = {date(2026, 10, d): {("requests", "polygon-mainnet"): 1_000_000} for d in range(1, 32)}
    month = rate_month_parts(attach_usage(parts, daily), OCT)
    draft = draft_invoice(base, month.charges, OCT)
    assert [(line.description, line.amount) for line in draft.lines] == [
        # 14M on Pro: 5M free, 9M x 0.00005
        ("Polygon PoS - 14,000,000 requests (01 Oct-14 Oct)", D("450.00")),
        ("Monthly RPC service - Enterprise (2026-10, 17/31 days from 15 Oct to 31 Oct)", D("6580.65")),
        ("Polygon PoS - 17,000,000 requests (included) (15 Oct-31 Oct)", D("0.00")),
    ]
    assert draft.total == D("7030.65")


def test_price_amendment_from_a_date():
    base = terms("enterprise")
    raise_ = Amendment(utc(2026, 10, 21), CATALOG["enterprise"], price_fixed=D(15000), reason="price increase")
    month = rate_month_parts(attach_usage(split_month(base, [raise_], OCT), {}), OCT)
    draft = draft_invoice(base, month.charges, OCT)
    assert [line.amount for line in draft.lines] == [D("7741.94"), D("5322.58")]  # 20/31 x 12000, 11/31 x 15000
    assert draft.total == D("13064.52")


def test_amendment_before_the_month_sets_its_terms():
    base = terms("enterprise")
    earlier = Amendment(utc(2026, 3, 1), CATALOG["enterprise"], price_fixed=D(9000), reason="renegotiated")
    parts = split_month(base, [earlier], OCT)
    assert len(parts) == 1 and parts[0][0].base_fee == D(9000)


def _daily(days_and_requests, chain="polygon-mainnet"):
    return {date(2026, 10, d): {("requests", chain): n} for d, n in days_and_requests}


@pytest.mark.parametrize("daily, ends, expected", [
    (_daily([(1, 6_000_000)]), None, "50.00"),                      # usage only on the first day
    (_daily([(31, 6_000_000)]), None, "50.00"),                     # only on the last day
    (_daily([(31, 6_000_000)]), utc(2026, 10, 31), "0.00"),         # ...after the contract ended
    # the free 5M run out on the 15th: 1M a day for 31 days = 26M past the free tier
    (_daily([(d, 1_000_000) for d in range(1, 32)]), None, "1300.00"),
])
def test_usage_on_single_days_and_free_tier_exhausted_mid_month(daily, ends, expected):
    t = terms("pro", end=ends)
    month = rate_month_parts(attach_usage(split_month(t, [], OCT), daily), OCT)
    assert draft_invoice(t, month.charges, OCT).total == D(expected)


def _usage_lines(*amounts: str) -> list:
    from billing_pipeline.domain.terms import RatedCharge
    return [RatedCharge(f"CTR-1:2026-10:USAGE:requests:chain-{i}", "CTR-1", "USAGE", f"chain-{i}", "requests",
                        f"Chain {i}", D(1), D(a), D(a), "USD") for i, a in enumerate(amounts)]


def _month_with_adjustments(t, charges, discounts=()):
    from billing_pipeline.domain.adjustments import apply_discounts, true_up
    from billing_pipeline.domain.terms import TermsPart
    parts = [TermsPart(t, OCT.days(), {})]
    charges = charges + true_up(parts, OCT, charges)
    return draft_invoice(t, charges + apply_discounts(parts, OCT, charges, discounts), OCT)


def test_a_full_discount_leaves_nothing_due_whatever_the_lines_round_to():
    """Lines of 0.11 and 0.05 (exactly 0.105 and 0.045): 100% off is -0.16, the lines' sum. It was
    taken of the exact 0.15, and the customer owed 0.01 of a waived month."""
    draft = _month_with_adjustments(terms("pro"), _usage_lines("0.105", "0.045"), (pct(100),))
    assert [line.amount for line in draft.lines] == [D("0.11"), D("0.05"), D("-0.16")]
    assert draft.total == D("0.00")


def test_a_true_up_brings_the_month_to_its_commitment_and_not_a_cent_beyond():
    """Lines of 33.34 + 33.33 + 33.33 reach the 100.00 minimum as printed, though their exact sum is
    99.985: no true-up (it was 0.015, a line of 0.02, and the month came to 100.02)."""
    t = terms("pro", minimum_commitment=D(100))
    assert _month_with_adjustments(t, _usage_lines("33.335", "33.325", "33.325")).total == D("100.00")
    # 99.98 as printed (exactly 99.984): topped up by 0.02 to exactly 100.00
    draft = _month_with_adjustments(t, _usage_lines("99.98", "0.004"))
    assert [line.amount for line in draft.lines] == [D("99.98"), D("0.00"), D("0.02")] and draft.total == D("100.00")


def test_two_discounts_never_round_the_month_below_zero():
    """1.00 of usage, a discount of 0.505 (a line of -0.51), then one larger than what is left: the
    second takes the 0.49 the first line left, not the exact 0.495 (-0.50, a total of -0.01)."""
    fixed = [Discount("A", "FIXED", D("0.505"), "ALL", date(2026, 1, 1), None, "Goodwill"),
             Discount("B", "FIXED", D("5"), "ALL", date(2026, 1, 1), None, "Outage credit")]
    draft = _month_with_adjustments(terms("pro"), _usage_lines("1.00"), fixed)
    assert [line.amount for line in draft.lines] == [D("1.00"), D("-0.51"), D("-0.49")] and draft.total == D("0.00")
