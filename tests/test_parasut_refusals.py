"""What a Turkish e-invoice may not be issued with: refused before any call, the reason named."""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal as D

import pytest

from billing_pipeline.domain.parasut_invoice import (InvoiceRejected, TurkishInvoice, TurkishLine, check_issuable,
                                                     vkn_is_valid)
from billing_pipeline.domain.periods import Period

OK = TurkishInvoice("CTR-T:2026-11:v1", "CTR-T", "METERED", "org_t", "Tee A.S.", "1234567890", "Kadikoy", None,
                    "Moda Cd. 1, Istanbul", "TRY", Period.parse_month("2026-11").start, date(2026, 12, 1), 30,
                    D("0.20"), D("105.85"), D("21.17"), D("127.02"),
                    (TurkishLine(1, "ETH Mainnet - 10,585 requests", D("105.85"), D("21.17")),))


def refusal(**changes) -> str:
    with pytest.raises(InvoiceRejected) as refused:
        check_issuable(dataclasses.replace(OK, **changes))
    return str(refused.value)


def test_a_sound_invoice_passes():
    check_issuable(OK)


@pytest.mark.parametrize("number,valid", [("1234567890", True), ("9876543217", True), ("2000000002", True),
                                          ("9876543210", False), ("5555555555", False), ("0000000000", False),
                                          ("123456789", False), ("12345678901", False)])
def test_a_vkn_s_tenth_digit_is_its_check_digit(number, valid):
    assert vkn_is_valid(number) is valid


def test_a_tax_number_failing_its_check_digit_is_refused():
    # 9876543210 was issued as an e-Arsiv: a mistyped VKN on a legal document
    assert refusal(tax_number="9876543210") == (
        "invoice CTR-T:2026-11:v1: customer org_t tax number '9876543210' is neither a valid VKN (10 digits) nor a "
        "valid TCKN (11 digits): check digit")
    check_issuable(dataclasses.replace(OK, tax_number="10000000146"))  # a valid TCKN: a person


@pytest.mark.parametrize("rate", ["0.08", "0.18"])
def test_kdv_rates_abolished_in_july_2023_are_refused(rate):
    # 18% on 25,000 TL went out as 4,500 KDV instead of 5,000
    assert refusal(vat_rate=D(rate)).startswith(
        f"invoice CTR-T:2026-11:v1: KDV rate {int(D(rate) * 100)}% is not a Turkish rate (1%, 10%, 20%)")


def test_kdv_zero_is_refused_for_want_of_an_exemption_code():
    assert refusal(vat_rate=D(0), tax=D(0), total=D("105.85")) == (
        "invoice CTR-T:2026-11:v1: KDV 0% needs an exemption code (istisna) on the e-document, which the contract "
        "does not give; issue it by hand in Parasut")


def test_prepaid_credit_is_refused_rather_than_issued_as_a_different_total():
    # the e-invoice would state 127.02 while our invoice and ledger say 77.02
    assert refusal(credits_applied=D("50.00"), total=D("77.02")) == (
        "invoice CTR-T:2026-11:v1: prepaid credit of 50.00 TRY cannot be deducted on a Turkish e-invoice (it would "
        "state 127.02 TRY, ours 77.02 TRY); settle the credit as a payment in Parasut and issue it by hand")


def test_an_invoice_converted_at_an_estimated_rate_is_not_issued():
    assert refusal(fx_estimated=True) == (
        "invoice CTR-T:2026-11:v1: its lira amounts use an estimated rate (TCMB's last known, no bulletin for the "
        "issue date); re-run fx_snapshot once TCMB answers, then invoice_drafts")
