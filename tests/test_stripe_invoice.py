"""The pure rules of what goes to Stripe: minor units, the 250-item rule, keys, refusals."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from billing_pipeline.domain.stripe_invoice import (IssuableInvoice, IssuableLine, InvoiceRejected, customer_key,
                                                    idempotency_key, plan_invoice)


def invoice(lines, currency="USD", credits="0", **kw) -> IssuableInvoice:
    items = tuple(IssuableLine(n, f"ch{n}", d, Decimal(a)) for n, (d, a) in enumerate(lines, start=1))
    subtotal = sum((i.amount for i in items), Decimal(0))
    return IssuableInvoice("CTR-F:2026-10:v2", 2, "CTR-F", "org_f", date(2026, 10, 1), currency, subtotal, Decimal(0),
                           Decimal(credits), subtotal - Decimal(credits), items, **kw)


def test_a_fixed_contract_sends_its_fee_and_usage_as_zero_amount_information_items():
    plan = plan_invoice(invoice([("Enterprise - monthly fee", "25000.00"), ("ETH Mainnet - 120,000,000 requests", "0"),
                                 ("ETH Mainnet - Egress 45.2 GB", "0.00")]), "cus_1", "in_1")
    assert [(r.params["amount"], r.params["description"]) for r in plan.items] == [
        ("2500000", "Enterprise - monthly fee"), ("0", "ETH Mainnet - 120,000,000 requests"),
        ("0", "ETH Mainnet - Egress 45.2 GB")]
    assert plan.subtotal_minor == 2500000 and plan.credit is None
    assert plan.create.params["metadata"]["version"] == "2"


def test_zero_decimal_and_three_decimal_currencies_use_their_minor_unit():
    assert plan_invoice(invoice([("fee", "1500")], "JPY"), "c", "i").items[0].params["amount"] == "1500"
    assert plan_invoice(invoice([("fee", "1.230")], "KWD"), "c", "i").subtotal_minor == 1230
    with pytest.raises(InvoiceRejected, match="whole hundredths"):
        plan_invoice(invoice([("fee", "1.234")], "KWD"), "c", "i")


@pytest.mark.parametrize("count,items,last", [(250, 250, "250"), (251, 250, "250-251"), (600, 250, "250-600")])
def test_at_most_250_items(count, items, last):
    plan = plan_invoice(invoice([(f"line {n}", "0.01") for n in range(1, count + 1)]), "c", "i")
    assert len(plan.items) == items and plan.items[-1].params["metadata"]["line_nos"] == last
    assert sum(int(r.params["amount"]) for r in plan.items) == count == plan.subtotal_minor


@pytest.mark.parametrize("currency,reason", [("HUF", "currency HUF is not one Stripe can invoice in"),
                                             ("XAU", "currency XAU is not one Stripe can invoice in")])
def test_currencies_stripe_cannot_take_are_refused(currency, reason):
    with pytest.raises(InvoiceRejected, match=reason):
        plan_invoice(invoice([("fee", "1")], currency), "c", "i")


def test_negative_totals_and_an_unknown_collection_method_are_refused():
    with pytest.raises(InvoiceRejected, match="negative amount"):
        plan_invoice(invoice([("fee", "10"), ("refund", "-10.01")]), "c", "i")
    with pytest.raises(InvoiceRejected, match="collection method 'cheque'"):
        plan_invoice(invoice([("fee", "10")], collection_method="cheque"), "c", "i")


def test_idempotency_keys_name_invoice_version_step_and_line():
    assert idempotency_key("CTR-F:2026-10:v2", "add_item", 7) == "billing:CTR-F:2026-10:v2:add_item:7"
    long = idempotency_key("C" * 300 + ":2026-10:v1", "finalize")
    assert long.startswith("billing:sha256:") and len(long) == 79
    a = customer_key("org_f", "update", {"metadata": {"contract_ids": "A"}})
    assert a == customer_key("org_f", "update", {"metadata": {"contract_ids": "A"}})
    assert a != customer_key("org_f", "update", {"metadata": {"contract_ids": "A,B"}})


def test_credit_goes_as_a_customer_balance_credit():
    plan = plan_invoice(invoice([("fee", "500.75")], "EUR", credits="120.00"), "cus_9", "in_9")
    assert plan.credit.path == "/v1/customers/cus_9/balance_transactions"
    assert (plan.credit.params["amount"], plan.credit.params["currency"]) == ("-12000", "eur")
    assert (plan.subtotal_minor, plan.total_minor) == (50075, 38075)
