from decimal import Decimal

import pytest

from billing_pipeline.domain.invoicing import draft_invoice
from billing_pipeline.domain.periods import Period
from billing_pipeline.domain.pricing import ChainUsage, ContractTerms, rate_contract

OCT = Period.parse_month("2026-10")


def terms(kind="METERED", currency="USD", region="GLOBAL", rate="0.00005", included=0, base="0"):
    return ContractTerms("CTR-1", "org_1", kind, currency, region, "plan", "Pro", Decimal(rate), included,
                         Decimal(base))


def test_period_parsing():
    assert Period.parse_month("2026-02-01") == Period.parse_month("2026-02")
    assert len(Period.parse_month("2028-02").days()) == 29
    with pytest.raises(ValueError, match="month '2026/10' is not YYYY-MM"):
        Period.parse_month("2026/10")


def test_metered_line_per_chain_rounded_once():
    t = terms(rate="0.00005")
    charges = rate_contract(t, [ChainUsage("eth-mainnet", 120_000_123), ChainUsage("bsc-mainnet", 99)], OCT)
    assert [(c.description, c.amount) for c in charges] == [
        ("BSC Mainnet - 99 requests", Decimal("0.00495")),
        ("ETH Mainnet - 120,000,123 requests", Decimal("6000.00615")),
    ]
    draft = draft_invoice(t, charges, OCT)
    assert [line.amount for line in draft.lines] == [Decimal("0.00"), Decimal("6000.01")]
    assert (draft.subtotal, draft.tax, draft.total) == (Decimal("6000.01"), Decimal("0.00"), Decimal("6000.01"))


def test_total_is_sum_of_rounded_lines_not_rounded_sum():
    t = terms(rate="0.015")
    charges = rate_contract(t, [ChainUsage("a", 3), ChainUsage("b", 3), ChainUsage("c", 3)], OCT)
    draft = draft_invoice(t, charges, OCT)
    assert sum(c.amount for c in charges) == Decimal("0.135")  # would round to 0.14
    assert draft.total == Decimal("0.15")  # 3 x 0.05


def test_fixed_contract_turkey_kdv_and_info_lines():
    t = terms("FIXED", "TRY", "TR", rate="0", base="25000")
    charges = rate_contract(t, [ChainUsage("eth-mainnet", 5_000_000)], OCT)
    assert [(c.kind, c.amount) for c in charges] == [("BASE_FEE", Decimal("25000")), ("USAGE_INFO", Decimal("0"))]
    draft = draft_invoice(t, charges, OCT)
    assert (draft.subtotal, draft.tax, draft.total) == (Decimal("25000.00"), Decimal("5000.00"), Decimal("30000.00"))


def test_hybrid_overage_beyond_included_units():
    t = terms("HYBRID", "USD", rate="0.00005", included=50_000_000, base="500")
    charges = rate_contract(t, [ChainUsage("eth-mainnet", 40_000_000), ChainUsage("bsc-mainnet", 10_000_001)], OCT)
    overage = charges[-1]
    assert (overage.kind, overage.quantity, overage.amount) == ("OVERAGE", Decimal(1), Decimal("0.00005"))
    draft = draft_invoice(t, charges, OCT)
    assert draft.total == Decimal("500.00")
    heavy = rate_contract(t, [ChainUsage("eth-mainnet", 70_000_000)], OCT)
    assert draft_invoice(t, heavy, OCT).total == Decimal("1500.00")  # 500 + 20M x 0.00005


def test_zero_decimal_currency():
    t = terms(currency="JPY", rate="0.5")
    draft = draft_invoice(t, rate_contract(t, [ChainUsage("eth-mainnet", 3)], OCT), OCT)
    assert draft.total == Decimal("2")  # 1.5 JPY rounds half-up to 2


def test_bad_terms_name_the_contract():
    with pytest.raises(ValueError, match="contract CTR-1: contract_type 'PREPAID'"):
        terms("PREPAID")
    with pytest.raises(ValueError, match="currency 'ABC'"):
        terms(currency="ABC")
