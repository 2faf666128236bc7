"""Correction documents reach Stripe and Parasut exactly once, whatever crashes between calls.

Stripe: CTR-A's issued 0.11 + 0.05 USD invoice, re-drafted as 0.15 + 0.02: a supplementary invoice
of 0.04 and a credit note of 0.03 on the issued (open) invoice. Parasut: CTR-P's issued 3.80 + 1.73
TRY (KDV 0.76 + 0.35), re-drafted as 3.85 + 1.70: a supplementary e-Arsiv of 0.05 + KDV 0.01 and a
refund bill of 0.03 + KDV 0.01 (each document's KDV on its own lines).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import psycopg
import pytest

from billing_pipeline.sinks.parasut import issuing as parasut_issuing
from billing_pipeline.sinks.parasut.refunds import issue_refunds
from billing_pipeline.sinks.stripe import issuing as stripe_issuing
from billing_pipeline.sinks.stripe.credit_notes import issue_credit_notes
from billing_pipeline.steps.corrections import complete_versions, plan_corrections
from billing_pipeline.steps.reconciliation import parasut_live_totals
from billing_pipeline.stores.postgres import transaction
from parasut_fixture import reset as reset_turkish, seed_turkish_drafts
from stripe_fixture import DRAFTS, reset as reset_global, seed_global_drafts
from stripe_server import StripeServer
from test_parasut_sink import FAST as FAST_POLLS, OCTOBER, CrashingTransport, client, parasut
from test_stripe_sink import CrashingClient, SimulatedCrash, gateway
from test_parasut_sink import SimulatedCrash as ParasutCrash

D = Decimal


def new_version(conn: psycopg.Connection, v1: str, amounts: dict[int, tuple[str, str]]) -> str:
    """v2 of an issued invoice with some lines' (amount, KDV) changed, as invoice_drafts would write it."""
    v2 = v1.replace(":v1", ":v2")
    conn.execute("""INSERT INTO invoices (invoice_id, contract_id, org_id, period_start, period_end, version, status,
                        currency, subtotal, tax_rate, tax, credits_applied, total, contract_doc_sha256, issue_date,
                        source_currency, fx_rate)
                    SELECT %s, contract_id, org_id, period_start, period_end, 2, 'DRAFT', currency, subtotal, tax_rate,
                           tax, credits_applied, total, contract_doc_sha256, issue_date, source_currency, fx_rate
                    FROM invoices WHERE invoice_id = %s""", (v2, v1))
    conn.execute("""INSERT INTO invoice_lines (invoice_id, line_no, charge_id, description, quantity, unit_price, amount,
                        currency, vat_rate, vat_amount)
                    SELECT %s, line_no, charge_id, description, quantity, unit_price, amount, currency, vat_rate,
                           vat_amount FROM invoice_lines WHERE invoice_id = %s""", (v2, v1))
    for line_no, (amount, vat) in amounts.items():
        conn.execute("UPDATE invoice_lines SET amount = %s, vat_amount = %s WHERE invoice_id = %s AND line_no = %s",
                     (D(amount), D(vat), v2, line_no))
    conn.execute("""UPDATE invoices i SET subtotal = s.amount, tax = s.vat, total = s.amount + s.vat - credits_applied
                    FROM (SELECT sum(amount) AS amount, sum(coalesce(vat_amount, 0)) AS vat FROM invoice_lines
                          WHERE invoice_id = %s) s WHERE i.invoice_id = %s""", (v2, v2))
    return v2


def rows(url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def _stripe_corrections(url, gw) -> None:
    plan_corrections(url, OCTOBER)
    stripe_issuing.issue_month(url, gw, OCTOBER, concurrency=1, kinds=("SUPPLEMENTARY",))
    issue_credit_notes(url, gw, OCTOBER)
    complete_versions(url, OCTOBER)


def _issued_month_with_a_new_version(url: str, server) -> int:
    with transaction(url) as conn:
        reset_global(conn)
        seed_global_drafts(conn)
    stripe_issuing.issue_month(url, gateway(server), OCTOBER, concurrency=1)
    with transaction(url) as conn:
        new_version(conn, "CTR-A:2026-10:v1", {1: ("0.15", "0"), 2: ("0.02", "0")})
        return conn.execute("SELECT max(entry_id) FROM ledger").fetchone()[0]


def _check_stripe_once(url: str, server, mark: int) -> None:
    fake = server.stripe
    [supplementary] = fake.invoices_for("CTR-A:2026-10:v2:supplementary")
    assert (supplementary["status"], supplementary["subtotal"]) == ("open", 4)
    [note] = fake.state.credit_notes.values()
    original = fake.invoices_for("CTR-A:2026-10:v1")[0]
    assert (note["invoice"], note["total"], [x["amount"] for x in note["lines"]["data"]]) == (original["id"], 3, [3])
    assert original["amount_due"] == 13
    assert rows(url, "SELECT invoice_id, status, total::text FROM invoices WHERE invoice_id LIKE 'CTR-A%%' ORDER BY 1") == [
        ("CTR-A:2026-10:v1", "ISSUED", "0.1600"), ("CTR-A:2026-10:v2", "CORRECTED", "0.1700"),
        ("CTR-A:2026-10:v2:credit-note", "ISSUED", "-0.0300"), ("CTR-A:2026-10:v2:supplementary", "ISSUED", "0.0400")]
    assert rows(url, "SELECT event, count(DISTINCT tx_id) FROM ledger WHERE entry_id > %s GROUP BY 1 ORDER BY 1",
                mark) == [("CREDIT_NOTE", 1), ("SUPPLEMENTARY_ISSUED", 1)]


def test_a_discount_that_grew_is_credited_as_a_custom_line(db_url):
    """CTR-A issued as 0.11 + 0.05 - 0.06 (its discount a negative Stripe item), re-drafted with the
    discount at -0.08: the credit note credits 0.02. Stripe credits only what a line charged, so it
    goes as a custom line (against the discount's own line Stripe refused it)."""
    drafts = {**DRAFTS, "CTR-A:2026-10:v1": ("CTR-A", "org_a", "USD", [
        ("ETH Mainnet - 7 requests", "0.11"), ("BSC Mainnet - 3 requests", "0.05"), ("Launch discount", "-0.06")], "0")}
    with transaction(db_url) as conn:
        seed_global_drafts(conn, drafts)
    with StripeServer() as server:
        stripe_issuing.issue_month(db_url, gateway(server), OCTOBER, concurrency=1)
        with transaction(db_url) as conn:
            new_version(conn, "CTR-A:2026-10:v1", {3: ("-0.08", "0")})
        _stripe_corrections(db_url, gateway(server))
        notes = list(server.stripe.state.credit_notes.values())
    assert [[(x["type"], x["amount"], x["description"]) for x in n["lines"]["data"]] for n in notes] == [
        [("custom_line_item", 2, "Correction: Launch discount")]]
    assert rows(db_url, "SELECT invoice_id, status, total::text FROM invoices WHERE invoice_id LIKE 'CTR-A%%' "
                        "ORDER BY 1") == [("CTR-A:2026-10:v1", "ISSUED", "0.1000"),
                                          ("CTR-A:2026-10:v2", "CORRECTED", "0.0800"),
                                          ("CTR-A:2026-10:v2:credit-note", "ISSUED", "-0.0200")]


def _clean_stripe_calls(url: str) -> int:
    with StripeServer() as server:
        _issued_month_with_a_new_version(url, server)
        before = len(server.stripe.requests)
        _stripe_corrections(url, gateway(server))
        return len(server.stripe.requests) - before


@pytest.mark.parametrize("forget_keys", [False, True], ids=["keys kept", "keys expired (24 h)"])
def test_stripe_corrections_survive_a_crash_at_every_call(db_url, forget_keys):
    calls = _clean_stripe_calls(db_url)
    # supplementary: create, item, read, finalize; credit note: lines, invoice, create (no preview without
    # Stripe Tax: the lines' own total is the note's)
    assert calls == 7
    for crash_at in range(1, calls + 1):
        for when in ("before", "after"):
            with StripeServer() as server:
                mark = _issued_month_with_a_new_version(db_url, server)
                with pytest.raises(SimulatedCrash):
                    _stripe_corrections(db_url, gateway(server, CrashingClient(crash_at, when)))
                if forget_keys:
                    server.stripe.forget_idempotency_keys()
                _stripe_corrections(db_url, gateway(server))
                _check_stripe_once(db_url, server, mark)


def _parasut_corrections(url, c, storage) -> None:
    plan_corrections(url, OCTOBER)
    parasut_issuing.issue_month(url, c, OCTOBER, storage=storage, polls=FAST_POLLS, workers=1, kinds=("SUPPLEMENTARY",))
    issue_refunds(url, c, OCTOBER)
    complete_versions(url, OCTOBER)


def _issued_turkish_month_with_a_new_version(url: str, server, storage) -> int:
    with transaction(url) as conn:
        reset_turkish(conn)
        seed_turkish_drafts(conn)
    parasut_issuing.issue_month(url, client(server, url), OCTOBER, storage=storage, polls=FAST_POLLS, workers=1)
    with transaction(url) as conn:
        new_version(conn, "CTR-P:2026-10:v1", {1: ("1.70", "0.34"), 2: ("3.85", "0.77")})
        return conn.execute("SELECT max(entry_id) FROM ledger").fetchone()[0]


def _check_parasut_once(url: str, server, mark: int) -> None:
    fake = server.parasut
    assert len(fake.sales_invoices_for("10000000146")) == 2 and fake.rejected == []
    supplementary = [s for s in fake.sales_invoices_for("10000000146")
                     if "Ref: CTR-P:2026-10:v2:supplementary" in s["attributes"]["description"]]
    assert [(s["attributes"]["gross_total"], s["attributes"]["total_vat"]) for s in supplementary] == [
        (D("0.05"), D("0.01"))]
    [refund] = fake.state.purchase_bills.values()
    assert (refund["attributes"]["gross_total"], refund["attributes"]["total_vat"]) == (D("0.03"), D("0.01"))
    assert rows(url, """SELECT invoice_id, status, total::text, external_total::text FROM invoices
                        WHERE invoice_id LIKE 'CTR-P%%' ORDER BY 1""") == [
        ("CTR-P:2026-10:v1", "ISSUED", "6.6400", "6.6400"), ("CTR-P:2026-10:v2", "CORRECTED", "6.6600", None),
        ("CTR-P:2026-10:v2:credit-note", "ISSUED", "-0.0400", "-0.0400"),
        ("CTR-P:2026-10:v2:supplementary", "ISSUED", "0.0600", "0.0600")]
    assert rows(url, "SELECT event, count(DISTINCT tx_id) FROM ledger WHERE entry_id > %s GROUP BY 1 ORDER BY 1",
                mark) == [("CREDIT_NOTE", 1), ("SUPPLEMENTARY_ISSUED", 1)]


def test_parasut_corrections_survive_a_crash_at_every_request(db_url, s3_endpoint):
    from billing_pipeline.stores.audit_bucket import AuditBucket

    storage = AuditBucket("invoices-test", s3_endpoint)
    storage.create()
    with parasut() as server:
        mark = _issued_turkish_month_with_a_new_version(db_url, server, storage)
        before = len(server.parasut.requests)
        _parasut_corrections(db_url, client(server, db_url), storage)
        calls = len(server.parasut.requests) - before
        _check_parasut_once(db_url, server, mark)
        # the daily re-fetch: all four documents as issued, then two edited in Parasut's UI
        live = parasut_live_totals(db_url, client(server, db_url), date(2026, 10, 1))
        assert live.passed and live.counts == {"compared": 4, "differing": 0}
        refund = next(iter(server.parasut.state.purchase_bills.values()))
        refund["attributes"]["net_total"] = D("2.40")
        [original] = [s for s in server.parasut.sales_invoices_for("1234567890")]
        original["attributes"]["item_type"] = "cancelled"
        live = parasut_live_totals(db_url, client(server, db_url), date(2026, 10, 1))
        assert [(r[0], r[2], r[3], r[4]) for r in live.rows] == [
            ("CTR-B:2026-10:v1", "25000.0000/5000.0000/30000.0000", "25000.0/5000.0/30000.0 cancelled/archived",
             D("0E-4")),
            ("CTR-P:2026-10:v2:credit-note", "-0.0300/-0.0100/-0.0400", "-0.03/-0.01/-2.4", D("-2.3600"))]
    # token; supplementary: sales invoice, inbox, e-archive, job x2, invoice, PDF x2, file, e-archive (its
    # legal number); refund: bill, read
    assert calls == 13
    for crash_at in range(1, calls + 1):
        for when in ("before", "after"):
            with parasut() as server:
                mark = _issued_turkish_month_with_a_new_version(db_url, server, storage)
                with pytest.raises(ParasutCrash):
                    _parasut_corrections(db_url, client(server, db_url, CrashingTransport(crash_at, when)), storage)
                _parasut_corrections(db_url, client(server, db_url), storage)
                _check_parasut_once(db_url, server, mark)


def test_a_credit_note_on_a_paid_invoice_credits_the_customer_s_balance(db_url):
    """CTR-A's 0.16 USD invoice paid, then re-drafted as 0.15 + 0.02 (the BSC line 0.03 less): the
    credit note's 3 cents were paid, so they go to the customer's balance. Its preview was asked
    without credit_amount, and Stripe refuses that on a paid invoice: the correction never went out,
    the supplementary did, and the version stayed CORRECTING."""
    with StripeServer() as server:
        mark = _issued_month_with_a_new_version(db_url, server)
        original = server.stripe.invoices_for("CTR-A:2026-10:v1")[0]
        server.stripe.handle("POST", f"/v1/invoices/{original['id']}/pay", {"paid_out_of_band": "true"}, None, "sk")
        _stripe_corrections(db_url, gateway(server))
        [note] = server.stripe.state.credit_notes.values()
        customer = server.stripe.state.customers[original["customer"]]
    assert (note["total"], note["pre_payment_amount"], note["post_payment_amount"], note["credit_amount"]) == (3, 0, 3, 3)
    assert customer["balance"] == -3  # owed to the customer: taken off their next invoice
    assert rows(db_url, "SELECT invoice_id, status, total::text FROM invoices WHERE invoice_id LIKE 'CTR-A%%' "
                        "ORDER BY 1") == [
        ("CTR-A:2026-10:v1", "ISSUED", "0.1600"), ("CTR-A:2026-10:v2", "CORRECTED", "0.1700"),
        ("CTR-A:2026-10:v2:credit-note", "ISSUED", "-0.0300"), ("CTR-A:2026-10:v2:supplementary", "ISSUED", "0.0400")]
    assert rows(db_url, "SELECT event, count(DISTINCT tx_id) FROM ledger WHERE entry_id > %s GROUP BY 1 ORDER BY 1",
                mark) == [("CREDIT_NOTE", 1), ("SUPPLEMENTARY_ISSUED", 1)]
