"""The Stripe sink against the local Stripe server, through the official SDK: exact amounts,
exactly-once issuance across crashes at every call, retries, bad input, the 250-item rule, dry run."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
import stripe

from billing_pipeline.domain.periods import Period
from billing_pipeline.domain.stripe_invoice import MAX_ITEMS
from billing_pipeline.sinks.stripe.gateway import RetryPolicy, StripeGateway
from billing_pipeline.sinks.stripe.issuing import issue_month
from billing_pipeline.stores.ledger import documents_against_ledger
from billing_pipeline.stores.postgres import transaction
from billing_pipeline.summary import format_month_summary
from at_once import at_once, failures
from stripe_fixture import DRAFTS, reset, seed_global_drafts
from stripe_server import StripeServer

OCTOBER = Period.parse_month("2026-10")
FAST = RetryPolicy(attempts=6, base_delay=0.01, max_delay=0.05)


class SimulatedCrash(BaseException):
    """The process dies here: nothing after this line of the sink runs."""


class CrashingClient(stripe.RequestsClient):
    """Dies just before the n-th HTTP request leaves, or just after its answer arrived."""

    def __init__(self, crash_at: int, when: str):
        super().__init__(timeout=5)
        self.crash_at, self.when, self.count = crash_at, when, 0

    def request(self, method, url, headers, post_data=None):
        self.count += 1
        if self.count == self.crash_at and self.when == "before":
            raise SimulatedCrash(f"before request {self.count}")
        answer = super().request(method, url, headers, post_data)
        if self.count == self.crash_at and self.when == "after":
            raise SimulatedCrash(f"after request {self.count}")
        return answer


def gateway(server, http_client=None, **kwargs) -> StripeGateway:
    return StripeGateway("sk_test_local", server.url, kwargs.pop("rate", 200), timeout_seconds=kwargs.pop("timeout", 5),
                         http_client=http_client, retry=kwargs.pop("retry", FAST), **kwargs)


@pytest.fixture
def drafts(db_url) -> str:
    with transaction(db_url) as conn:
        seed_global_drafts(conn)
    return db_url


def rows(url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def finalized(server) -> dict[str, dict]:
    out = {}
    for inv in server.stripe.state.invoices.values():
        if inv["status"] != "draft":
            assert inv["metadata"]["invoice_id"] not in out, f"two finalized Stripe invoices for {inv['metadata']}"
            out[inv["metadata"]["invoice_id"]] = inv
    return out


def items_of(server, stripe_invoice_id: str) -> list[dict]:
    return [i for i in server.stripe.state.items.values() if i["invoice"] == stripe_invoice_id]


def test_issues_each_draft_once_with_exact_minor_units(drafts):
    with StripeServer(tax_rates={"DE": 0.19}) as server:
        result = issue_month(drafts, gateway(server), OCTOBER)
        assert sorted(o.status for o in result.outcomes) == ["ISSUED"] * 3
        stripe_invoices = finalized(server)
        a, c, t = (stripe_invoices[k] for k in ("CTR-A:2026-10:v1", "CTR-C:2026-10:v1", "CTR-T:2026-10:v1"))

        # CTR-A: two lines, 11 + 5 cents, send_invoice due in 14 days, the signed contract's hash
        assert (a["currency"], a["subtotal"], a["total"], a["amount_due"]) == ("usd", 16, 16, 16)
        assert (a["collection_method"], a["days_until_due"], a["auto_advance"]) == ("send_invoice", 14, False)
        assert a["metadata"] == {"invoice_id": "CTR-A:2026-10:v1", "contract_id": "CTR-A", "org_id": "org_a",
                                 "period": "2026-10", "version": "1", "contract_doc_sha256": "ab" * 32}
        assert [(i["amount"], i["description"], i["metadata"]["line_id"], i["metadata"]["period"])
                for i in sorted(items_of(server, a["id"]), key=lambda i: i["id"])] == [
            (11, "ETH Mainnet - 7 requests", "CTR-A:2026-10:v1#1", "2026-10"),
            (5, "BSC Mainnet - 3 requests", "CTR-A:2026-10:v1#2", "2026-10")]
        # CTR-C: 500.75 EUR charged automatically, 120.00 prepaid credit applied by Stripe at finalization
        assert (c["currency"], c["subtotal"], c["total"], c["amount_due"]) == ("eur", 50075, 50075, 38075)
        assert c["collection_method"] == "charge_automatically" and c["days_until_due"] is None
        # CTR-T: Stripe Tax on, a German customer at 19%: 49.00 + 9.31
        assert (t["subtotal"], t["tax"], t["total"], t["automatic_tax"]) == (4900, 931, 5831, {"enabled": True})

    issued = rows(drafts, """SELECT invoice_id, status, external_id, external_number, hosted_url, pdf_url,
                                    external_status, external_subtotal, external_tax, external_amount_due
                             FROM invoices ORDER BY invoice_id""")
    assert [(r[0], r[1], r[2], r[6], str(r[7]), str(r[8]), str(r[9])) for r in issued] == [
        ("CTR-A:2026-10:v1", "ISSUED", a["id"], "open", "0.1600", "0.0000", "0.1600"),
        ("CTR-C:2026-10:v1", "ISSUED", c["id"], "open", "500.7500", "0.0000", "380.7500"),
        ("CTR-T:2026-10:v1", "ISSUED", t["id"], "open", "49.0000", "9.3100", "58.3100")]
    assert all(r[3].startswith("RPC-") and r[4].endswith(r[2]) and r[5].endswith(f"{r[2]}/pdf") for r in issued)

    ledger = rows(drafts, "SELECT event, entity_id, account, amount::text FROM ledger ORDER BY entry_id")
    assert sorted(ledger) == sorted([
        ("INVOICE_ISSUED", "CTR-A:2026-10:v1", "receivable:org_a", "0.1600"),
        ("INVOICE_ISSUED", "CTR-A:2026-10:v1", "revenue", "-0.1600"),
        ("INVOICE_ISSUED", "CTR-A:2026-10:v1", "tax_payable", "0.0000"),
        ("INVOICE_ISSUED", "CTR-C:2026-10:v1", "receivable:org_c", "500.7500"),
        ("INVOICE_ISSUED", "CTR-C:2026-10:v1", "revenue", "-500.7500"),
        ("INVOICE_ISSUED", "CTR-C:2026-10:v1", "tax_payable", "0.0000"),
        ("CREDIT_CONSUMED", "CTR-C:2026-10:v1", "prepaid_credit:org_c", "120.0000"),
        ("CREDIT_CONSUMED", "CTR-C:2026-10:v1", "receivable:org_c", "-120.0000"),
        ("INVOICE_ISSUED", "CTR-T:2026-10:v1", "receivable:org_t", "58.3100"),
        ("INVOICE_ISSUED", "CTR-T:2026-10:v1", "revenue", "-49.0000"),
        ("INVOICE_ISSUED", "CTR-T:2026-10:v1", "tax_payable", "-9.3100")])
    # the ledger took Stripe's tax (9.31); the invoice's own tax stays 0 (Stripe Tax computes it at
    # issue): documents_against_ledger compares Stripe's figure, and found every such invoice wrong
    with psycopg.connect(drafts) as conn:
        assert documents_against_ledger(conn).problems == []
    # and the month's summary shows what Stripe charged CTR-T (it showed tax 0.00, total 49.00)
    summary = format_month_summary(drafts, OCTOBER).splitlines()
    block = summary[summary.index("CTR-T:2026-10:v1  Tau AG  [METERED, GLOBAL]  ISSUED"):]
    assert [line.split()[-2:] for line in block[2:5]] == [["49.00", "USD"], ["9.31", "USD"], ["58.31", "USD"]]
    assert block[3].split()[:5] == ["tax", "(Stripe", "Tax,", "as", "issued)"]


def test_customers_are_looked_up_before_created_and_kept_in_step(drafts):
    with StripeServer() as server:
        existing = server.stripe.handle("POST", "/v1/customers", {"name": "Alpha (created by hand)",
                                                                  "metadata": {"org_id": "org_a"}}, None, "sk")[1]
        issue_month(drafts, gateway(server), OCTOBER)
        customers = server.stripe.state.customers
        assert len(customers) == 3  # org_a found by its metadata, org_c and org_t created
        assert customers[existing["id"]]["metadata"] == {"org_id": "org_a", "contract_ids": "CTR-A"}
        assert rows(drafts, "SELECT customer_id FROM stripe_customers WHERE org_id = 'org_a'") == [(existing["id"],)]
        assert {c["metadata"]["org_id"]: c["metadata"]["contract_ids"] for c in customers.values()} == {
            "org_a": "CTR-A", "org_c": "CTR-C", "org_t": "CTR-T"}


def test_a_rerun_sends_nothing(drafts):
    with StripeServer() as server:
        issue_month(drafts, gateway(server), OCTOBER)
        before = len(server.stripe.requests)
        again = issue_month(drafts, gateway(server), OCTOBER)
        assert again.outcomes == [] and len(server.stripe.requests) == before


def _check_exactly_once(url: str, server, ledger_before: int) -> None:
    stripe_invoices = finalized(server)
    assert sorted(stripe_invoices) == sorted(DRAFTS)
    for invoice_id, inv in stripe_invoices.items():
        lines = DRAFTS[invoice_id][3]
        items = items_of(server, inv["id"])
        assert sorted(i["metadata"]["line_id"] for i in items) == [f"{invoice_id}#{n}" for n in range(1, len(lines) + 1)]
        assert inv["subtotal"] == sum(int(Decimal(a) * 100) for _, a in lines)
    assert [i for i in server.stripe.state.invoices.values() if i["status"] == "draft"] == []
    assert len(server.stripe.state.customers) == 3
    assert sum(len(v) for v in server.stripe.state.balance_transactions.values()) == 1
    assert rows(url, "SELECT count(*) FROM invoices WHERE status <> 'ISSUED'") == [(0,)]
    # every write the re-run saw done is SENT: none left to show as stuck in outbox_not_stuck an hour later
    assert rows(url, "SELECT idempotency_key, status FROM sink_outbox WHERE status <> 'SENT'") == []
    issued = rows(url, "SELECT event, count(DISTINCT tx_id) FROM ledger WHERE entry_id > %s GROUP BY 1 ORDER BY 1",
                  ledger_before)
    assert issued == [("CREDIT_CONSUMED", 1), ("INVOICE_ISSUED", 3)]


def _clean_run_calls(url: str) -> int:
    with StripeServer() as server:
        issue_month(url, gateway(server), OCTOBER, concurrency=1)
        return len(server.stripe.requests)


@pytest.mark.parametrize("forget_keys", [False, True], ids=["keys kept", "keys expired (24 h)"])
def test_a_crash_before_or_after_any_call_then_a_rerun_issues_exactly_once(drafts, forget_keys):
    calls = _clean_run_calls(drafts)
    assert calls == 21  # 3 searches, 3 customers, 3 invoices, 5 items, 1 credit, 3 reads, 3 finalizations
    for crash_at in range(1, calls + 1):
        for when in ("before", "after"):
            with transaction(drafts) as conn:
                reset(conn)
                seed_global_drafts(conn)
                ledger_before = conn.execute("SELECT coalesce(max(entry_id), 0) FROM ledger").fetchone()[0]
            with StripeServer() as server:
                with pytest.raises(SimulatedCrash):
                    issue_month(drafts, gateway(server, CrashingClient(crash_at, when)), OCTOBER, concurrency=1)
                if forget_keys:
                    server.stripe.forget_idempotency_keys()
                result = issue_month(drafts, gateway(server), OCTOBER, concurrency=1)
                assert all(o.status == "ISSUED" for o in result.outcomes), (crash_at, when, result.outcomes)
                _check_exactly_once(drafts, server, ledger_before)


def test_429_500_timeouts_and_resets_are_retried_with_the_same_key(drafts):
    slept = []
    with StripeServer(hang_seconds=1.0) as server:
        server.stripe.inject("/v1/invoices", "429", "500", "timeout_after", method="POST")
        server.stripe.inject("/v1/invoiceitems", "timeout_before", "reset", "429")
        server.stripe.inject("/v1/customers", "500", method="POST")
        gw = gateway(server, timeout=0.5, sleep=slept.append)
        result = issue_month(drafts, gw, OCTOBER, concurrency=1)
        assert [o.status for o in result.outcomes] == ["ISSUED"] * 3
        assert server.stripe.faults == []
        assert (gw.retried, gw.throttled) == (7, 2)
        _check_exactly_once(drafts, server, 0)
    # exponential backoff with jitter: attempt n waits between half and all of base * 2^(n-1)
    assert all(0.005 <= s <= 0.05 for s in slept) and len(slept) == 7


def test_retries_running_out_stop_the_org_with_a_one_line_reason(drafts):
    with StripeServer() as server:
        server.stripe.inject("/v1/customers", "reset", "reset", method="POST")
        result = issue_month(drafts, gateway(server, retry=RetryPolicy(attempts=2, base_delay=0.01)), OCTOBER,
                             concurrency=1)
    [stopped] = result.by_status("FAILED")
    # the SDK's network message spans lines; the reason lands in all_invoices_issued's table
    assert (stopped.invoice_id, "\n" in stopped.reason) == ("CTR-A:2026-10:v1", False)
    assert stopped.reason.startswith("customer org_a: Stripe POST /v1/customers still failing after 2 attempts: "
                                     "APIConnectionError HTTP None Unexpected error communicating with Stripe. "), \
        stopped.reason


def test_should_retry_false_is_not_retried_and_stops_only_that_invoice(drafts):
    with StripeServer() as server:
        server.stripe.inject("/v1/invoices", "402", method="POST")
        result = issue_month(drafts, gateway(server), OCTOBER, concurrency=1)
        outcome = {o.invoice_id: o for o in result.outcomes}
        assert outcome["CTR-A:2026-10:v1"].status == "FAILED"
        assert "HTTP 402" in outcome["CTR-A:2026-10:v1"].reason
        assert [outcome[k].status for k in ("CTR-C:2026-10:v1", "CTR-T:2026-10:v1")] == ["ISSUED", "ISSUED"]
    # nothing reached Stripe for it: back to DRAFT, reason stored; the outbox says FAILED
    assert rows(drafts, "SELECT status, sink_error FROM invoices WHERE invoice_id = 'CTR-A:2026-10:v1'") == [
        ("DRAFT", outcome["CTR-A:2026-10:v1"].reason)]
    assert rows(drafts, "SELECT status FROM sink_outbox WHERE idempotency_key = 'billing:CTR-A:2026-10:v1:create_invoice'") \
        == [("FAILED",)]


def test_bad_currency_and_negative_total_stop_with_a_reason_others_proceed(db_url):
    bad = {**DRAFTS,
           "CTR-A:2026-10:v1": ("CTR-A", "org_a", "XAU", [("ETH Mainnet - 7 requests", "0.11")], "0"),
           "CTR-T:2026-10:v1": ("CTR-T", "org_t", "USD", [("Pro - monthly fee", "49.00"),
                                                          ("Goodwill refund", "-60.00")], "0")}
    with transaction(db_url) as conn:
        seed_global_drafts(conn, bad)
    with StripeServer() as server:
        result = issue_month(db_url, gateway(server), OCTOBER)
        assert sorted((o.invoice_id, o.status) for o in result.outcomes) == [
            ("CTR-A:2026-10:v1", "FAILED"), ("CTR-C:2026-10:v1", "ISSUED"), ("CTR-T:2026-10:v1", "FAILED")]
        assert sorted(finalized(server)) == ["CTR-C:2026-10:v1"]
    assert rows(db_url, "SELECT invoice_id, status, sink_error FROM invoices WHERE sink_error IS NOT NULL ORDER BY 1") == [
        ("CTR-A:2026-10:v1", "DRAFT", "invoice CTR-A:2026-10:v1: currency XAU is not one Stripe can invoice in"),
        ("CTR-T:2026-10:v1", "DRAFT", "invoice CTR-T:2026-10:v1: lines sum to a negative amount (subtotal -11.0000, "
                                      "total -11.0000 USD); a negative balance is a credit note, not an invoice")]


def test_a_discount_under_stripe_tax_stops_before_any_call_and_goes_as_a_negative_item_otherwise(db_url):
    """Stripe Tax takes no negative invoice item: CTR-T (Stripe Tax on) stops before its first call,
    instead of leaving a Stripe draft built up to the discount; CTR-A (no Stripe Tax) is issued
    with its discount as a negative item."""
    discounted = {**DRAFTS,
                  "CTR-A:2026-10:v1": ("CTR-A", "org_a", "USD", [("ETH Mainnet - 7 requests", "0.11"),
                                                                 ("Launch discount (-50%)", "-0.06")], "0"),
                  "CTR-T:2026-10:v1": ("CTR-T", "org_t", "USD", [("Pro - monthly fee", "49.00"),
                                                                 ("Launch discount (-10%)", "-4.90")], "0")}
    with transaction(db_url) as conn:
        seed_global_drafts(conn, discounted)
    with StripeServer() as server:
        result = issue_month(db_url, gateway(server), OCTOBER)
        assert sorted((o.invoice_id, o.status) for o in result.outcomes) == [
            ("CTR-A:2026-10:v1", "ISSUED"), ("CTR-C:2026-10:v1", "ISSUED"), ("CTR-T:2026-10:v1", "FAILED")]
        assert sorted(i["metadata"]["invoice_id"] for i in server.stripe.state.invoices.values()) == [
            "CTR-A:2026-10:v1", "CTR-C:2026-10:v1"]  # no draft of CTR-T left in Stripe
        alpha = finalized(server)["CTR-A:2026-10:v1"]
        assert sorted(i["amount"] for i in items_of(server, alpha["id"])) == [-6, 11] and alpha["subtotal"] == 5
    assert rows(db_url, "SELECT invoice_id, status, sink_error FROM invoices WHERE sink_error IS NOT NULL") == [
        ("CTR-T:2026-10:v1", "DRAFT", "invoice CTR-T:2026-10:v1: line 2 (Launch discount (-10%), -4.9000 USD) is "
                                      "negative and Stripe Tax takes no negative invoice item; issue it without "
                                      "Stripe Tax (contracts.stripe_tax) or without the discount")]


def test_more_than_250_lines_fold_into_the_last_item_and_totals_match(db_url):
    lines = [(f"Chain {n} - {n} requests", f"{n / 100:.2f}") for n in range(1, 301)]
    with transaction(db_url) as conn:
        seed_global_drafts(conn, {"CTR-A:2026-10:v1": ("CTR-A", "org_a", "USD", lines, "0")})
    with StripeServer() as server:
        issue_month(db_url, gateway(server), OCTOBER)
        inv = finalized(server)["CTR-A:2026-10:v1"]
        items = sorted(items_of(server, inv["id"]), key=lambda i: i["id"])
        assert len(items) == MAX_ITEMS
        assert items[-1]["amount"] == sum(range(250, 301)) and items[-1]["metadata"]["line_nos"] == "250-300"
        assert items[-1]["description"].startswith("Further charges: invoice lines 250-300 (51 lines")
        assert inv["subtotal"] == sum(range(1, 301)) == 45150


def test_dry_run_records_the_exact_requests_and_sends_nothing(drafts):
    result = issue_month(drafts, None, OCTOBER)
    assert sorted((o.invoice_id, o.status, o.requests) for o in result.outcomes) == [
        ("CTR-A:2026-10:v1", "DRY_RUN", 4), ("CTR-C:2026-10:v1", "DRY_RUN", 5), ("CTR-T:2026-10:v1", "DRY_RUN", 3)]
    recorded = rows(drafts, "SELECT idempotency_key, status, payload FROM sink_outbox ORDER BY outbox_id")
    assert len(recorded) == 15 and {r[1] for r in recorded} == {"DRY_RUN"}
    by_key = {r[0]: r[2] for r in recorded}
    assert by_key["billing:CTR-C:2026-10:v1:apply_credit"] == {
        "method": "POST", "path": "/v1/customers/{stripe_customer:org_c}/balance_transactions",
        "params": {"amount": "-12000", "currency": "eur", "description": "Prepaid credit applied to CTR-C:2026-10:v1",
                   "metadata": {"invoice_id": "CTR-C:2026-10:v1", "contract_id": "CTR-C"}}}
    assert by_key["billing:CTR-A:2026-10:v1:add_item:2"]["params"]["amount"] == "5"
    assert rows(drafts, "SELECT DISTINCT status FROM invoices") == [("DRAFT",)]
    # a second dry run replaces its rows; nothing doubles
    issue_month(drafts, None, OCTOBER)
    assert rows(drafts, "SELECT count(*) FROM sink_outbox") == [(15,)]


def test_two_sink_runs_of_the_same_month_at_once_issue_each_invoice_once(drafts):
    """Two runs started together (two threads, each its own connections), three times: before the
    runs of a month took turns, the later could fail recording the customer both had found."""
    for _ in range(3):
        with transaction(drafts) as conn:
            reset(conn)
            seed_global_drafts(conn)
            ledger_before = conn.execute("SELECT coalesce(max(entry_id), 0) FROM ledger").fetchone()[0]
        with StripeServer() as server:
            results = at_once(*[lambda: issue_month(drafts, gateway(server), OCTOBER, concurrency=4)] * 2)
            assert failures(results) == []
            _check_exactly_once(drafts, server, ledger_before)
