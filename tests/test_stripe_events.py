"""Stripe's invoice events applied once each: polled with a cursor, or pushed to the signed webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from decimal import Decimal

import httpx
import psycopg
import pytest

from billing_pipeline.sinks.stripe.events import sync_events
from billing_pipeline.sinks.stripe.issuing import issue_month
from billing_pipeline.sinks.stripe.webhook import handler_for
from billing_pipeline.steps.invoicing import month_in_force
from billing_pipeline.stores.ledger import documents_against_ledger, verify
from billing_pipeline.stores.postgres import transaction
from billing_pipeline.summary import format_month_summary
from loopback import LoopbackServer
from stripe_fixture import seed_global_drafts
from stripe_server import StripeServer
from test_stripe_sink import OCTOBER, CrashingClient, SimulatedCrash, gateway, rows

A, C, T = "CTR-A:2026-10:v1", "CTR-C:2026-10:v1", "CTR-T:2026-10:v1"


@pytest.fixture
def issued(db_url):
    with transaction(db_url) as conn:
        seed_global_drafts(conn)
    with StripeServer() as server:
        issue_month(db_url, gateway(server), OCTOBER)
        yield db_url, server


def stripe_id(server, our_id: str) -> str:
    return next(i["id"] for i in server.stripe.invoices_for(our_id) if i["status"] != "draft")


def test_paid_failed_and_voided_events_update_invoices_and_the_ledger(issued):
    url, server = issued
    stripe = server.stripe
    stripe.handle("POST", f"/v1/invoices/{stripe_id(server, A)}/pay", {"paid_out_of_band": "true"}, None, "sk")
    stripe.fail_payment(stripe_id(server, T))
    stripe.handle("POST", f"/v1/invoices/{stripe_id(server, T)}/void", {}, None, "sk")

    first = sync_events(url, gateway(server), None)
    # 3 finalized (already recorded by the sink), A paid, T failed then voided
    assert first.applied == {"already issued": 3, "paid": 1, "payment failed": 1, "voided": 1}
    assert first.cursor == stripe.state.events[-1]["id"]
    assert rows(url, "SELECT invoice_id, status, external_status FROM invoices ORDER BY 1") == [
        (A, "PAID", "paid"), (C, "ISSUED", "open"), (T, "VOID", "void")]
    assert rows(url, "SELECT event, account, amount::text FROM ledger WHERE event <> 'INVOICE_ISSUED' "
                     "AND event <> 'CREDIT_CONSUMED' ORDER BY entry_id") == [
        ("PAYMENT_RECEIVED", "cash", "0.1600"), ("PAYMENT_RECEIVED", "receivable:org_a", "-0.1600"),
        ("PAYMENT_FAILED", "receivable:org_t", "0.0000"), ("PAYMENT_FAILED", "cash", "0.0000"),
        ("INVOICE_VOIDED", "revenue", "49.0000"), ("INVOICE_VOIDED", "tax_payable", "0.0000"),
        ("INVOICE_VOIDED", "receivable:org_t", "-49.0000")]

    # nothing new after the cursor; a poll from the start again applies nothing twice
    assert sync_events(url, gateway(server), first.cursor).total == 0
    replay = sync_events(url, gateway(server), None)
    assert (replay.total, replay.skipped_seen) == (0, 6)
    with psycopg.connect(url) as conn:
        assert verify(conn).ok
        assert documents_against_ledger(conn).problems == []  # a voided invoice still agrees with its issue

    # the month's summary lists the voided invoice apart: it bills nothing (it counted USD 49.00)
    summary = format_month_summary(url, OCTOBER).splitlines()
    assert summary[0].startswith("Billing month 2026-10: 2 invoices (1 ISSUED, 1 PAID) from ")
    assert summary[0].endswith("; 1 voided")
    assert summary[-6:] == ["Voided (bill nothing, not in the totals):", f"    {T}  Tau AG  VOID  49.00 USD", "",
                            "Totals by currency (the version of each invoice in force):",
                            "    EUR: subtotal 500.75, tax 0.00, total 380.75",
                            "    USD: subtotal 0.16, tax 0.00, total 0.16"]
    assert month_in_force(url, OCTOBER) == (2, {"EUR": Decimal("380.75"), "USD": Decimal("0.16")})


def test_the_cursor_pages_through_more_than_a_hundred_new_events_in_order(issued):
    url, server = issued
    cursor = sync_events(url, gateway(server), None).cursor
    for _ in range(230):
        server.stripe.fail_payment(stripe_id(server, C))
    server.stripe.handle("POST", f"/v1/invoices/{stripe_id(server, C)}/pay", {"paid_out_of_band": "true"}, None, "sk")
    result = sync_events(url, gateway(server), cursor)
    assert result.applied == {"payment failed": 230, "paid": 1}  # the payment came last, after every failure
    assert result.cursor == server.stripe.state.events[-1]["id"]
    assert rows(url, "SELECT count(DISTINCT tx_id) FROM ledger WHERE event = 'PAYMENT_FAILED'") == [(230,)]
    assert rows(url, "SELECT amount::text FROM ledger WHERE event = 'PAYMENT_RECEIVED' AND account = 'cash'") == [
        ("380.7500",)]  # 500.75 less the 120.00 of prepaid credit Stripe applied


def test_a_finalized_event_records_an_issue_the_sink_crashed_before_recording(db_url):
    with transaction(db_url) as conn:
        seed_global_drafts(conn)
    with StripeServer() as server:
        # request 21 of a clean run is CTR-T's finalize: it reaches Stripe, the sink dies before recording it
        with pytest.raises(SimulatedCrash):
            issue_month(db_url, gateway(server, CrashingClient(21, "after")), OCTOBER, concurrency=1)
        assert rows(db_url, "SELECT status FROM invoices WHERE invoice_id = %s", T) == [("ISSUING",)]
        result = sync_events(db_url, gateway(server), None)
        assert result.applied["issued"] == 1
        assert rows(db_url, "SELECT status, external_number FROM invoices WHERE invoice_id = %s", T) == [
            ("ISSUED", "RPC-0003")]  # the third finalized
        issue_month(db_url, gateway(server), OCTOBER, concurrency=1)  # the re-run finishes the others
    assert rows(db_url, "SELECT entity_id, count(DISTINCT tx_id) FROM ledger WHERE event = 'INVOICE_ISSUED' "
                        "GROUP BY 1 ORDER BY 1") == [(A, 1), (C, 1), (T, 1)]


def _signed(body: bytes, secret: str, at: int) -> str:
    signature = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={signature}"


def test_the_webhook_verifies_signatures_and_applies_each_event_once(issued):
    url, server = issued
    server.stripe.handle("POST", f"/v1/invoices/{stripe_id(server, A)}/pay", {"paid_out_of_band": "true"}, None, "sk")
    event = server.stripe.state.events[-1]
    body = json.dumps(event).encode()
    secret = "whsec_test_secret"
    with LoopbackServer(handler_for(url, secret)) as hook:
        now = int(time.time())
        forged = httpx.post(hook.url, content=body, headers={"Stripe-Signature": _signed(body, "whsec_other", now)})
        stale = httpx.post(hook.url, content=body, headers={"Stripe-Signature": _signed(body, secret, now - 301)})
        unsigned = httpx.post(hook.url, content=body)
        assert [r.status_code for r in (forged, stale, unsigned)] == [400, 400, 400]
        assert "signature" in forged.json()["error"] and stale.json()["error"].startswith("signature check failed")
        assert rows(url, "SELECT status FROM invoices WHERE invoice_id = %s", A) == [("ISSUED",)]

        good = httpx.post(hook.url, content=body, headers={"Stripe-Signature": _signed(body, secret, now - 280)})
        again = httpx.post(hook.url, content=body, headers={"Stripe-Signature": _signed(body, secret, now)})
        assert (good.status_code, good.json()["outcome"]) == (200, "paid")
        assert (again.status_code, again.json()["outcome"]) == (200, "already applied")
    assert rows(url, "SELECT status FROM invoices WHERE invoice_id = %s", A) == [("PAID",)]
    # the poller later sees the same event: skipped by its id
    polled = sync_events(url, gateway(server), None)
    assert polled.applied == {"already issued": 2, "already paid": 1} and polled.skipped_seen == 1
    assert rows(url, "SELECT received_via, outcome FROM stripe_events WHERE event_type = 'invoice.paid'") == [
        ("WEBHOOK", "paid")]


def test_a_void_or_an_edit_in_the_dashboard_turns_the_live_reconciliation_red(issued):
    from datetime import date

    from billing_pipeline.assets.stripe_invoices import stripe_invoices_unchanged
    from billing_pipeline.resources import BillingDatabase, StripeResource
    from billing_pipeline.steps.reconciliation import stripe_live_totals

    url, server = issued
    assert stripe_live_totals(url, gateway(server), date(2026, 10, 1)).counts == {"compared": 3, "differing": 0}
    server.stripe.handle("POST", f"/v1/invoices/{stripe_id(server, A)}/void", {}, None, "sk")  # event not yet read
    server.stripe.state.invoices[stripe_id(server, C)]["subtotal"] = 50000  # 500.00 instead of 500.75
    finding = stripe_live_totals(url, gateway(server), date(2026, 10, 1))
    assert [(r[0], r[2], r[3], str(r[4])) for r in finding.rows] == [
        (A, "0.1600 ISSUED", "0.16 void", "0.0000"), (C, "500.7500 ISSUED", "500.00 open", "-0.7500")]
    # the daily check compares what was issued in the last two months, whatever month it bills: these
    # October invoices were issued today (it chose by billing month, so from December on it compared
    # none of them and stayed green over a void)
    result = stripe_invoices_unchanged(BillingDatabase(url=url), StripeResource(api_key="sk_test_local",
                                                                                api_base=server.url))
    from datetime import datetime, timedelta, timezone
    today = datetime.now(timezone.utc).date()
    assert result.metadata["since"].value == (today.replace(day=1) - timedelta(days=1)).replace(day=1).isoformat()
    assert (result.metadata["compared"].value, result.metadata["differing"].value, result.passed) == (3, 2, False)
    rows(url, "UPDATE invoices SET issued_at = '2026-09-30T23:59:59Z' WHERE invoice_id = %s RETURNING 1", A)
    assert stripe_live_totals(url, gateway(server), date(2026, 10, 1)).counts == {"compared": 2, "differing": 1}
