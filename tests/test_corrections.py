"""The correction rules (domain/corrections.py): per-line differences, split by sign, exact."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from billing_pipeline.domain import ledger as L
from billing_pipeline.domain.corrections import (CREDIT_NOTE, SUPPLEMENTARY, VersionLine, correction_id, corrections)

D = Decimal


def line(charge: str, amount: str, quantity: str = "1") -> VersionLine:
    return VersionLine(charge, f"{charge} line", D(quantity), D(amount))


def test_nothing_changed_or_only_quantities_issues_nothing():
    before = [line("eth", "10.00", "100"), line("free", "0.00", "5")]
    assert corrections(before, before, "USD") == []
    assert corrections(before, [line("eth", "10.00", "100"), line("free", "0.00", "9")], "USD") == []


def test_lines_that_went_down_and_up_become_two_documents():
    # a commitment true-up shrinks by what the usage grew: both documents, each exact, netting to zero
    before = [line("usage", "60.00", "600"), line("true-up", "40.00"), line("dropped", "5.00")]
    after = [line("usage", "75.00", "750"), line("true-up", "25.00"), line("new", "2.50")]
    credit, supplementary = corrections(before, after, "USD")
    assert (credit.kind, [(x.line_no, x.charge_id, x.amount, x.amount_before, x.amount_after) for x in credit.lines]) == (
        CREDIT_NOTE, [(1, "true-up", D("-15.00"), D("40.00"), D("25.00")), (2, "dropped", D("-5.00"), D("5.00"), D("0.00"))])
    assert (supplementary.kind, [(x.charge_id, x.amount, x.quantity) for x in supplementary.lines]) == (
        SUPPLEMENTARY, [("usage", D("15.00"), D("150")), ("new", D("2.50"), D("1"))])
    assert (credit.subtotal, credit.total, supplementary.subtotal) == (D("-20.00"), D("-20.00"), D("17.50"))
    assert [x.description for x in credit.lines + supplementary.lines] == [
        "Correction: true-up line", "Correction: dropped line (removed)", "Correction: usage line",
        "Correction: new line"]


def test_kdv_is_computed_on_each_documents_own_lines():
    # 3.80 -> 3.85 TRY: KDV 0.76 -> 0.77 by the versions, and round(0.05 x 20%) = 0.01 on the document;
    # 1.73 -> 1.76: the versions' KDV is 0.35 -> 0.35 (0.346, 0.352), the document's round(0.03 x 20%) = 0.01
    before = [line("eth", "3.80"), line("bsc", "1.73")]
    after = [line("eth", "3.85"), line("bsc", "1.76")]
    [supplementary] = corrections(before, after, "TRY", vat_rate=D("0.20"))
    assert [(x.amount, x.vat_amount) for x in supplementary.lines] == [(D("0.05"), D("0.01")), (D("0.03"), D("0.01"))]
    assert (supplementary.subtotal, supplementary.tax, supplementary.total) == (D("0.08"), D("0.02"), D("0.10"))
    [credit] = corrections(after, before, "TRY", vat_rate=D("0.20"))
    assert (credit.subtotal, credit.tax, credit.total) == (D("-0.08"), D("-0.02"), D("-0.10"))


def test_a_version_listing_a_charge_twice_is_refused():
    with pytest.raises(ValueError, match="same rated charge twice"):
        corrections([line("eth", "1.00"), line("eth", "2.00")], [line("eth", "1.00")], "USD")


def test_document_ids_and_ledger_links():
    assert correction_id("CTR-A:2026-10:v2", CREDIT_NOTE) == "CTR-A:2026-10:v2:credit-note"
    assert correction_id("CTR-A:2026-10:v3", SUPPLEMENTARY) == "CTR-A:2026-10:v3:supplementary"
    tx = L.document_issued("CREDIT_NOTE", "CTR-P:2026-10:v2:credit-note", "org_p", "TRY", D("-2.0000"),
                           D("-0.4000"), corrects="CTR-P:2026-10:v1")
    assert (tx.kind, [(p.account, p.amount) for p in tx.postings]) == ("CREDIT_NOTE", [
        ("receivable:org_p", D("-2.4000")), ("revenue", D("2.0000")), ("tax_payable", D("0.4000")),
        ("corrects:CTR-P:2026-10:v1", D("0.0000"))])
    with pytest.raises(ValueError, match="wrong sign"):
        L.document_issued("CREDIT_NOTE", "x:credit-note", "org", "USD", D("1.0000"), D(0), corrects="x")
    with pytest.raises(ValueError, match="must name the invoice it corrects"):
        L.document_issued("SUPPLEMENTARY", "x:supplementary", "org", "USD", D("1.0000"), D(0))


def test_an_invoice_that_left_draft_cannot_be_edited_or_deleted(db_url):
    import psycopg

    from billing_pipeline.stores.postgres import transaction
    from stripe_fixture import seed_global_drafts

    with transaction(db_url) as conn:
        seed_global_drafts(conn)
        conn.execute("UPDATE invoices SET status = 'ISSUED', external_id = 'in_1' WHERE invoice_id = 'CTR-A:2026-10:v1'")
    attempts = {
        "total": "UPDATE invoices SET subtotal = 0.17, total = 0.17 WHERE invoice_id = 'CTR-A:2026-10:v1'",
        "delete": "DELETE FROM invoices WHERE invoice_id = 'CTR-A:2026-10:v1'",
        "line": "UPDATE invoice_lines SET amount = 0.12 WHERE invoice_id = 'CTR-A:2026-10:v1' AND line_no = 1",
        "line delete": "DELETE FROM invoice_lines WHERE invoice_id = 'CTR-A:2026-10:v1'",
        "line insert": "INSERT INTO invoice_lines (invoice_id, line_no, charge_id, description, quantity, unit_price, "
                       "amount, currency) VALUES ('CTR-A:2026-10:v1', 9, 'x', 'extra', 1, 1, 1, 'USD')",
    }
    for what, sql in attempts.items():
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="CTR-A:2026-10:v1") as error:
            with transaction(db_url) as conn:
                conn.execute(sql)
        assert "frozen" in str(error.value) or "never deleted" in str(error.value), what
    with transaction(db_url) as conn:  # what may move: status, provider fields; and drafts stay editable
        conn.execute("UPDATE invoices SET status = 'PAID', external_status = 'paid', paid_at = now() "
                     "WHERE invoice_id = 'CTR-A:2026-10:v1'")
        conn.execute("UPDATE invoice_lines SET amount = 0.80 WHERE invoice_id = 'CTR-T:2026-10:v1'")
        conn.execute("DELETE FROM invoices WHERE invoice_id = 'CTR-C:2026-10:v1'")
        assert conn.execute("SELECT status FROM invoices WHERE invoice_id = 'CTR-A:2026-10:v1'").fetchone() == ("PAID",)


def test_a_correction_that_stopped_is_reported_with_its_reason(db_url):
    """`billing dispute` names a version it could not correct, and exits 1: it listed only the
    month's documents, so a correction that stopped (here: prepaid credit it would give back) went
    unmentioned and the dispute looked handled."""
    from billing_pipeline.domain.periods import Period
    from billing_pipeline.steps.corrections import dispute_report
    from stripe_fixture import seed_global_drafts

    reason = "prepaid credit applied would change from 120.0000 to 0.0000 EUR (the correction is larger than what " \
             "the credit left due); correct it by hand"
    with psycopg.connect(db_url) as conn:
        seed_global_drafts(conn)
        conn.execute("UPDATE invoices SET status = 'ISSUED' WHERE invoice_id = 'CTR-C:2026-10:v1'")
        conn.execute("""INSERT INTO invoices (invoice_id, contract_id, org_id, period_start, period_end, version, status,
                            currency, subtotal, tax_rate, tax, credits_applied, total, sink_error)
                        VALUES ('CTR-C:2026-10:v2', 'CTR-C', 'org_c', '2026-10-01', '2026-11-01', 2, 'DRAFT', 'EUR',
                                0, 0, 0, 0, 0, %s)""", (reason,))
    assert dispute_report(db_url, Period.parse_month("2026-10"), {}) == (
        [f"NOT CORRECTED CTR-C:2026-10:v2: {reason}"], True)
