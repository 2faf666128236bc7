"""A discount on a Turkish e-invoice is spread over the lines it reduces (an e-invoice takes no
negative line), each line's KDV is on what is left of it, and Parasut is sent exactly that."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from billing_pipeline.domain.discount_shares import ShareableLine, discount_shares
from billing_pipeline.domain.invoicing import Conversion, draft_invoice
from billing_pipeline.domain.parasut_invoice import (InvoiceRejected, TurkishInvoice, TurkishLine, details_kdv,
                                                     detail_lines, sales_invoice_body)
from billing_pipeline.domain.periods import Period
from billing_pipeline.domain.plans import MeteredCharge, Plan
from billing_pipeline.domain.price_models import PerUnit
from billing_pipeline.domain.terms import ContractTerms, RatedCharge

OCTOBER = Period.parse_month("2026-10")
D = Decimal


def _line(n, kind, amount, applies_to=None):
    return ShareableLine(n, kind, D(amount), applies_to)


def test_a_discount_is_spread_in_proportion_in_whole_kurus_adding_up_exactly():
    shares = discount_shares([_line(1, "BASE_FEE", "100.00"), _line(2, "USAGE", "50.00"), _line(3, "USAGE", "0.01"),
                              _line(4, "DISCOUNT", "-10.00", "ALL")], "TRY")
    # 1000 kurus over 10000 : 5000 : 1 -> 666.62, 333.31, 0.07: the kurus left over goes to the largest remainder
    assert shares == {1: D("6.67"), 2: D("3.33")}


def test_a_discount_stays_within_its_reach_and_a_tie_goes_to_the_first_line():
    lines = [_line(1, "BASE_FEE", "500.00"), _line(2, "USAGE", "1.00"), _line(3, "OVERAGE", "1.00"),
             _line(4, "DISCOUNT", "-0.01", "USAGE"), _line(5, "DISCOUNT", "-50.00", "BASE_FEE")]
    assert discount_shares(lines, "TRY") == {1: D("50.00"), 2: D("0.01")}


def test_what_a_discounts_reach_cannot_take_goes_to_the_other_lines():
    # 50% of everything takes 5 of each line; then 100% of usage finds 5 left on it: the other 5 of
    # it goes to the fee, so the month is free and no line goes below zero
    lines = [_line(1, "BASE_FEE", "10.00"), _line(2, "USAGE", "10.00"), _line(3, "DISCOUNT", "-10.00", "ALL"),
             _line(4, "DISCOUNT", "-10.00", "USAGE")]
    assert discount_shares(lines, "TRY") == {1: D("10.00"), 2: D("10.00")}


def test_a_discount_beyond_the_lines_is_refused_naming_its_line():
    with pytest.raises(ValueError, match=r"line 2: a discount of -5.01 TRY exceeds the lines left to reduce by "
                                         r"0.01 TRY"):
        discount_shares([_line(1, "USAGE", "5.00"), _line(2, "DISCOUNT", "-5.01", "ALL")], "TRY")


def _terms(plan_type="METERED", currency="TRY") -> ContractTerms:
    if plan_type == "FIXED":
        plan = Plan(plan_id="p", name="P", type="FIXED", currency=currency, base_fee=D(25000))
    else:
        plan = Plan(plan_id="p", name="P", type="METERED", currency=currency, charges=[
            MeteredCharge(meter="requests", unit="request", price=PerUnit(unit_price=D("0.01")))])
    return ContractTerms("CTR-T", "org_t", "TR", currency, plan, datetime(2026, 1, 1, tzinfo=timezone.utc))


def _charge(n, kind, amount, currency="TRY", applies_to=None):
    return RatedCharge(f"CTR-T:2026-10:{n}", "CTR-T", kind, None, None, f"line {n}", D(1), D(amount), D(amount),
                       currency, {"applies_to": applies_to} if applies_to else {})


def _turkish(draft, contract_type="METERED") -> TurkishInvoice:
    return TurkishInvoice(
        "CTR-T:2026-10:v1", "CTR-T", contract_type, "org_t", "Tee A.S.", "1234567890", None, None, None, "TRY",
        OCTOBER.start, date(2026, 11, 1), 15, draft.tax_rate, draft.subtotal, draft.tax, draft.total,
        tuple(TurkishLine(x.line_no, x.description, x.amount, x.vat_amount, x.discount_share) for x in draft.lines))


def test_a_turkish_discount_reduces_the_lines_kdv_and_parasut_gets_no_negative_line():
    # 10% of 150.06 = 15.006 -> -15.01. As a line of its own its KDV would be -3.00 and the month's
    # 20.01 + 10.01 - 3.00 = 27.02; spread (10.01 and 5.00) it is 18.00 + 9.01 = 27.01, as Parasut computes it
    draft = draft_invoice(_terms(), [_charge(1, "USAGE", "100.03"), _charge(2, "USAGE", "50.03"),
                                     _charge(3, "DISCOUNT", "-15.006", applies_to="ALL")], OCTOBER)
    assert [(x.amount, x.discount_share, x.vat_amount) for x in draft.lines] == [
        (D("100.03"), D("10.01"), D("18.00")), (D("50.03"), D("5.00"), D("9.01")), (D("-15.01"), 0, 0)]
    assert (draft.subtotal, draft.tax, draft.total) == (D("135.05"), D("27.01"), D("162.06"))
    body = sales_invoice_body(_turkish(draft), "contact-1")
    assert [(d["attributes"]["unit_price"], d["attributes"].get("discount_type"), d["attributes"].get("discount_value"))
            for d in body["data"]["relationships"]["details"]["data"]] == [
        (D("100.03"), "amount", D("10.01")), (D("50.03"), "amount", D("5.00"))]


def test_a_fixed_turkish_contract_goes_as_its_static_line_less_its_discount():
    draft = draft_invoice(_terms("FIXED"), [_charge(1, "BASE_FEE", "25000"), _charge(2, "USAGE_INFO", "0"),
                                            _charge(3, "DISCOUNT", "-2500.005", applies_to="BASE_FEE")], OCTOBER)
    details = detail_lines(_turkish(draft, "FIXED"))
    assert [(d.description, d.amount, d.discount) for d in details] == [
        ("Monthly RPC Service - 25,000 TL", D("25000.00"), D("2500.01"))]
    assert (draft.subtotal, draft.tax) == (D("22499.99"), D("4500.00")) == (
        draft.subtotal, details_kdv(_turkish(draft, "FIXED"), details))


def test_a_draft_whose_discount_is_a_negative_line_of_its_own_is_refused_before_any_call():
    draft = draft_invoice(_terms(), [_charge(1, "USAGE", "100.03"), _charge(2, "USAGE", "50.03"),
                                     _charge(3, "DISCOUNT", "-15.006", applies_to="ALL")], OCTOBER)
    old = _turkish(draft)
    old = TurkishInvoice(*[getattr(old, f) for f in ("invoice_id", "contract_id", "contract_type", "org_id",
                                                     "legal_name", "tax_number", "tax_office", "email", "address",
                                                     "currency", "period_start", "issue_date", "days_until_due",
                                                     "vat_rate", "subtotal")],
                         D("27.02"), D("162.07"),
                         (TurkishLine(1, "line 1", D("100.03"), D("20.01")), TurkishLine(2, "line 2", D("50.03"), D("10.01")),
                          TurkishLine(3, "line 3", D("-15.01"), D("-3.00"))))
    with pytest.raises(InvoiceRejected, match=r"CTR-T:2026-10:v1: its discount lines come to 15.01 TRY but its lines "
                                              r"carry 0 TRY of them; .* re-draft it"):
        sales_invoice_body(old, "contact-1")


def test_a_month_free_in_dollars_is_free_in_lira():
    # at 34.5520 TRY per USD, 0.13 and 0.17 USD are 4.49 (4.49176) and 5.87 (5.87384), 10.36 together,
    # and their 100% discount, -0.30 USD, converts to -10.3656 -> -10.37: a kurus beyond the lines.
    # The discount takes -10.36, so the month is free in lira too
    draft = draft_invoice(_terms(currency="USD"), [_charge(1, "USAGE", "0.13", "USD"), _charge(2, "USAGE", "0.17", "USD"),
                                  _charge(3, "DISCOUNT", "-0.30", "USD", "ALL")], OCTOBER,
                          conversion=Conversion("USD", D("34.5520"), "TCMB:2026-10-30:USD"))
    assert [(x.source_amount, x.amount, x.discount_share, x.vat_amount) for x in draft.lines] == [
        (D("0.13"), D("4.49"), D("4.49"), 0), (D("0.17"), D("5.87"), D("5.87"), 0), (D("-0.30"), D("-10.36"), 0, 0)]
    assert (draft.subtotal, draft.tax, draft.total) == (0, 0, 0)
