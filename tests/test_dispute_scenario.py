"""The dispute scenario end to end: October closed and issued through the local Stripe and Parasut
servers; late usage for 5 and 12 October arrives; the dispute backfill re-runs those two days and
the month. Every amount below is worked out by hand.

Late rows: org_a +2 ETH requests on 5 Oct (per unit 0.015: 7 -> 9 requests, 0.105 -> 0.135, line
0.11 -> 0.14 USD: a supplementary invoice of 0.03); org_p +2 on 5 Oct (volume tiers in lira, 2.00
each up to 5 requests, 1.00 each for all above: 4 x 2.00 = 8.00 -> 6 x 1.00 = 6.00 TRY: a Parasut
refund of 2.00 + 0.40 KDV); org_v +2 on 12 Oct (volume tiers in dollars, 0.10 up to 5, 0.05 above:
5 x 0.10 = 0.50 -> 7 x 0.05 = 0.35: a Stripe credit note of 0.15); org_b +1 on 12 Oct (a fixed
25,000 TL contract: only the usage line's quantity moves, so a new version and no document).
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import date
from decimal import Decimal

import dagster as dg
import psycopg
import pyarrow as pa
import pytest

from billing_pipeline.close import close_month, dispute_month, issue_month
from billing_pipeline.domain.periods import Period
from billing_pipeline.domain.plans import MeteredCharge, Plan
from billing_pipeline.domain.price_models import Tier, Volume
from billing_pipeline.resources import StripeResource
from billing_pipeline.resources.audit_storage import AuditStorageResource
from billing_pipeline.resources.parasut import ParasutResource
from billing_pipeline.stores.audit_bucket import AuditBucket
from billing_pipeline.stores.ledger import documents_against_ledger, verify
from billing_pipeline.steps.corrections import dispute_report, month_corrections
from billing_pipeline.sinks.stripe.events import sync_events
from billing_pipeline.stores.plans import sync_plans
from billing_pipeline.summary import format_month_summary
from month_fixture import TEST_PLANS, _row, october_events, ts
from parasut_server import ParasutServer
from product_defs import product_defs
from stripe_server import StripeServer
from test_stripe_sink import gateway

OCTOBER = Period.parse_month("2026-10")
D = Decimal
PLANS = {
    **TEST_PLANS,
    "volume_usd": Plan(plan_id="volume_usd", name="Volume", type="METERED", currency="USD", charges=[MeteredCharge(
        meter="requests", unit="request", price=Volume(tiers=(Tier(up_to=5, unit_price=D("0.10")),
                                                              Tier(unit_price=D("0.05")))))]),
    "volume_try": Plan(plan_id="volume_try", name="Hacim TR", type="METERED", currency="TRY", charges=[MeteredCharge(
        meter="requests", unit="request", price=Volume(tiers=(Tier(up_to=5, unit_price=D("2.00")),
                                                              Tier(unit_price=D("1.00")))))]),
}


def _events(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=october_events().schema)


def _late_rows() -> pa.Table:
    return _events([_row(ts(2026, 10, 5, 18, 0, i), f"late-a{i}", "org_a", "prj_a1", "eth-mainnet") for i in range(2)]
                   + [_row(ts(2026, 10, 5, 19, 0, i), f"late-p{i}", "org_p", "prj_p", "eth-mainnet") for i in range(2)]
                   + [_row(ts(2026, 10, 12, 7, 0, i), f"late-v{i}", "org_v", "prj_v", "eth-mainnet") for i in range(2)]
                   + [_row(ts(2026, 10, 12, 8), "late-b0", "org_b", "prj_b", "eth-mainnet")])


@pytest.fixture
def scenario(october, usage_store):
    usage_store.insert_arrow("requests_raw", _events(
        [_row(ts(2026, 10, 5, 10, 0, i), f"p{i}", "org_p", "prj_p", "eth-mainnet") for i in range(4)]
        + [_row(ts(2026, 10, 12, 6, 0, i), f"v{i}", "org_v", "prj_v", "eth-mainnet") for i in range(5)]))
    with psycopg.connect(october, autocommit=True) as conn:
        sync_plans(conn, PLANS)
        conn.execute("""INSERT INTO customers (org_id, legal_name, country, tax_id, email) VALUES
                            ('org_p', 'Pelin Yilmaz', 'TR', '10000000146', 'pelin@example.test'),
                            ('org_v', 'Volume Co', 'US', NULL, 'ap@volume.test')""")
        conn.execute("""INSERT INTO contracts (contract_id, org_id, plan_id, contract_type, currency, region, start_at)
                        VALUES ('CTR-P', 'org_p', 'volume_try', 'METERED', 'TRY', 'TR', '2026-01-01'),
                               ('CTR-V', 'org_v', 'volume_usd', 'METERED', 'USD', 'GLOBAL', '2026-01-01')""")
    return october


def _documents(db_url: str) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            """SELECT invoice_id, kind, status, corrects_invoice_id, currency, subtotal::text, tax::text, total::text,
                      sink, external_subtotal::text, external_total::text FROM invoices
               WHERE kind <> 'INVOICE' ORDER BY 1""").fetchall()


def _ledger_since(db_url: str, mark: int) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            """SELECT event, entity_id, account, amount::text, currency FROM ledger
               WHERE entry_id > %s AND event <> 'AUDIT_SNAPSHOT' ORDER BY entity_id, entry_id""", (mark,)).fetchall()


def test_a_dispute_backfill_issues_exactly_the_differences(scenario, chdb_path, usage_store, instance, s3_endpoint,
                                                          signing_key):
    db_url = scenario
    AuditBucket("billing-audit", s3_endpoint).create()
    with StripeServer() as stripe_server, ParasutServer(rate_limit=None, job_seconds_until_done=0.02) as parasut_server:
        defs = product_defs(
            db_url, chdb_path,
            audit_storage=AuditStorageResource(endpoint_url=s3_endpoint, bucket="billing-audit"),
            stripe=StripeResource(api_key="sk_test_local", api_base=stripe_server.url, max_ops_per_second=500),
            parasut=ParasutResource(base_url=parasut_server.url, company_id="1234", client_id="cid",
                                    client_secret="csecret", username="api@example.test", password="pw",
                                    requests_per_window=1000, window_seconds=1.0, poll_interval_seconds=0.01))
        stripe, parasut = stripe_server.stripe, parasut_server.parasut

        # 1. October closed and issued: six invoices, none corrected yet
        close_month(instance, OCTOBER, definitions=defs)
        issue_month(instance, OCTOBER, definitions=defs)
        with psycopg.connect(db_url) as conn:
            issued = conn.execute("SELECT invoice_id, status, total::text FROM invoices ORDER BY 1").fetchall()
            mark = conn.execute("SELECT max(entry_id) FROM ledger").fetchone()[0]
        assert issued == [("CTR-A:2026-10:v1", "ISSUED", "0.1600"), ("CTR-B:2026-10:v1", "ISSUED", "30000.0000"),
                          ("CTR-C:2026-10:v1", "ISSUED", "500.7500"), ("CTR-D:2026-10:v1", "ISSUED", "0.0300"),
                          ("CTR-P:2026-10:v1", "ISSUED", "9.6000"), ("CTR-V:2026-10:v1", "ISSUED", "0.5000")]
        stripe_writes, parasut_writes = stripe.writes(), parasut.writes()
        assert (len(stripe.state.invoices), len(parasut.state.sales_invoices)) == (4, 2)

        # 2. late usage for two days, then the dispute backfill of those days and the month
        usage_store.insert_arrow("requests_raw", _late_rows())
        run_ids = dispute_month(instance, OCTOBER, [date(2026, 10, 5), date(2026, 10, 12)], definitions=defs)
        assert len(run_ids) == 3  # two separate days, then the month
        # what `billing dispute` prints: this dispute's documents
        assert dispute_report(db_url, OCTOBER, {}) == ([
            "supplementary CTR-A:2026-10:v2:supplementary: 0.0300 USD correcting CTR-A:2026-10:v1, ISSUED",
            "credit note CTR-P:2026-10:v2:credit-note: -2.4000 TRY correcting CTR-P:2026-10:v1, ISSUED",
            "credit note CTR-V:2026-10:v2:credit-note: -0.1500 USD correcting CTR-V:2026-10:v1, ISSUED"], False)
        # the month's summary: each contract's version in force once, its documents under it
        summary = format_month_summary(db_url, OCTOBER).splitlines()
        assert summary[0].startswith("Billing month 2026-10: 6 invoices (4 CORRECTED, 2 ISSUED) from ")
        assert "CTR-A:2026-10:v2  Alpha Ltd  [METERED, GLOBAL]  CORRECTED" in summary
        assert any(line.split() == ["supplementary", "invoice", "CTR-A:2026-10:v2:supplementary", "(ISSUED)", "0.03",
                                    "USD"] for line in summary)
        assert summary[-4:] == ["Totals by currency (the version of each invoice in force):",
                                "    EUR: subtotal 500.75, tax 0.00, total 500.75",
                                "    TRY: subtotal 25,006.00, tax 5,001.20, total 30,007.20",
                                "    USD: subtotal 0.57, tax 0.00, total 0.57"]

        assert _documents(db_url) == [
            ("CTR-A:2026-10:v2:supplementary", "SUPPLEMENTARY", "ISSUED", "CTR-A:2026-10:v1", "USD", "0.0300",
             "0.0000", "0.0300", "STRIPE", "0.0300", "0.0300"),
            ("CTR-P:2026-10:v2:credit-note", "CREDIT_NOTE", "ISSUED", "CTR-P:2026-10:v1", "TRY", "-2.0000",
             "-0.4000", "-2.4000", "PARASUT", "-2.0000", "-2.4000"),
            ("CTR-V:2026-10:v2:credit-note", "CREDIT_NOTE", "ISSUED", "CTR-V:2026-10:v1", "USD", "-0.1500",
             "0.0000", "-0.1500", "STRIPE", "-0.1500", "-0.1500")]
        with psycopg.connect(db_url) as conn:
            versions = conn.execute("SELECT invoice_id, status, total::text FROM invoices WHERE kind = 'INVOICE' "
                                    "ORDER BY 1").fetchall()
            lines = conn.execute(
                """SELECT invoice_id, charge_id, description, amount_before::text, amount_after::text, amount::text,
                          vat_amount::text FROM invoice_lines WHERE amount_after IS NOT NULL ORDER BY 1""").fetchall()
        assert versions == issued[:1] + [("CTR-A:2026-10:v2", "CORRECTED", "0.1900"), issued[1],
                              ("CTR-B:2026-10:v2", "CORRECTED", "30000.0000")] + issued[2:4] + [
            issued[4], ("CTR-P:2026-10:v2", "CORRECTED", "7.2000"), issued[5], ("CTR-V:2026-10:v2", "CORRECTED", "0.3500")]
        assert [(i, a, b, d, v) for i, _c, _desc, a, b, d, v in lines] == [
            ("CTR-A:2026-10:v2:supplementary", "0.1100", "0.1400", "0.0300", "0.0000"),
            ("CTR-P:2026-10:v2:credit-note", "8.0000", "6.0000", "-2.0000", "-0.4000"),
            ("CTR-V:2026-10:v2:credit-note", "0.5000", "0.3500", "-0.1500", "0.0000")]

        # Stripe: one supplementary invoice (one item of 3 cents) and one credit note on V's open invoice
        supplementary = stripe.invoices_for("CTR-A:2026-10:v2:supplementary")
        assert [(i["status"], i["subtotal"], i["metadata"]["corrects_invoice_id"]) for i in supplementary] == [
            ("open", 3, "CTR-A:2026-10:v1")]
        [note] = stripe.state.credit_notes.values()
        v1 = stripe.invoices_for("CTR-V:2026-10:v1")[0]
        assert (note["invoice"], note["total"], note["pre_payment_amount"], note["credit_amount"]) == (v1["id"], 15, 15, 0)
        assert [(x["type"], x["amount"], x["invoice_line_item"] is not None) for x in note["lines"]["data"]] == [
            ("invoice_line_item", 15, True)]
        assert (v1["amount_due"], note["metadata"]["invoice_id"]) == (35, "CTR-V:2026-10:v2:credit-note")
        # Parasut: a refund bill from Pelin Yilmaz naming both documents, nothing else new
        [refund] = parasut.state.purchase_bills.values()
        assert (refund["attributes"]["item_type"], refund["attributes"]["gross_total"],
                refund["attributes"]["total_vat"], refund["attributes"]["net_total"]) == ("refund", D("2.00"),
                                                                                        D("0.40"), D("2.40"))
        assert "Ref: CTR-P:2026-10:v2:credit-note" in refund["attributes"]["description"]
        assert "Duzeltilen fatura: CTR-P:2026-10:v1" in refund["attributes"]["description"]
        assert parasut.rejected == [] and (len(parasut.state.sales_invoices), len(parasut.e_documents)) == (2, 2)
        assert len(stripe.state.invoices) == 5  # the four issued and the supplementary one: nothing re-issued

        # the ledger: each correction once, linked to the invoice it corrects; still balanced and chained
        assert _ledger_since(db_url, mark) == [
            ("SUPPLEMENTARY_ISSUED", "CTR-A:2026-10:v2:supplementary", "receivable:org_a", "0.0300", "USD"),
            ("SUPPLEMENTARY_ISSUED", "CTR-A:2026-10:v2:supplementary", "revenue", "-0.0300", "USD"),
            ("SUPPLEMENTARY_ISSUED", "CTR-A:2026-10:v2:supplementary", "tax_payable", "0.0000", "USD"),
            ("SUPPLEMENTARY_ISSUED", "CTR-A:2026-10:v2:supplementary", "corrects:CTR-A:2026-10:v1", "0.0000", "USD"),
            ("CREDIT_NOTE", "CTR-P:2026-10:v2:credit-note", "receivable:org_p", "-2.4000", "TRY"),
            ("CREDIT_NOTE", "CTR-P:2026-10:v2:credit-note", "revenue", "2.0000", "TRY"),
            ("CREDIT_NOTE", "CTR-P:2026-10:v2:credit-note", "tax_payable", "0.4000", "TRY"),
            ("CREDIT_NOTE", "CTR-P:2026-10:v2:credit-note", "corrects:CTR-P:2026-10:v1", "0.0000", "TRY"),
            ("CREDIT_NOTE", "CTR-V:2026-10:v2:credit-note", "receivable:org_v", "-0.1500", "USD"),
            ("CREDIT_NOTE", "CTR-V:2026-10:v2:credit-note", "revenue", "0.1500", "USD"),
            ("CREDIT_NOTE", "CTR-V:2026-10:v2:credit-note", "tax_payable", "0.0000", "USD"),
            ("CREDIT_NOTE", "CTR-V:2026-10:v2:credit-note", "corrects:CTR-V:2026-10:v1", "0.0000", "USD")]
        with psycopg.connect(db_url) as conn:
            assert verify(conn).ok
            # v1 still ISSUED, v2 CORRECTED (no issue of its own), its documents issued: all as the ledger says
            assert documents_against_ledger(conn).problems == []

        # the checks of the run, and the new audit snapshot holding the corrections
        checks = _checks(instance, run_ids[-1])
        assert {k: v for k, v in checks.items() if "correction" in k} == {"all_corrections_issued": True,
                                                                           "corrections_add_up": True}
        assert {k for k, v in checks.items() if not v} == {"all_usage_rated"}  # org_x: usage and no contract
        objects, _ = AuditBucket("billing-audit", s3_endpoint).download("snapshots/2026-10")
        invoices_csv = objects["invoices.csv"].decode()
        assert "CTR-V:2026-10:v2:credit-note,CTR-V,org_v,2026-10-01,2026-11-01,2,CREDIT_NOTE,CTR-V:2026-10:v1" \
            in invoices_csv

        # 3. the same backfill again: nothing changed, nothing issued, nothing in the ledger but the snapshot
        stripe_writes, parasut_writes = stripe.writes(), parasut.writes()
        with psycopg.connect(db_url) as conn:
            mark = conn.execute("SELECT max(entry_id) FROM ledger").fetchone()[0]
        before = {d[0]: d[7] for d in month_corrections(db_url, OCTOBER)}
        dispute_month(instance, OCTOBER, [date(2026, 10, 5), date(2026, 10, 12)], definitions=defs)
        assert (stripe.writes(), parasut.writes()) == (stripe_writes, parasut_writes)
        assert len(_documents(db_url)) == 3 and _ledger_since(db_url, mark) == []
        assert dispute_report(db_url, OCTOBER, before) == (
            ["no amount changed: nothing new to issue (3 earlier correction documents unchanged)"], False)


def _checks(instance: dg.DagsterInstance, run_id: str) -> dict[str, bool]:
    logs = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    return {e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data.passed for e in logs}


def test_a_dispute_without_credentials_records_the_documents_requests(scenario, chdb_path, usage_store, instance):
    db_url, defs = scenario, product_defs(scenario, chdb_path)  # no Stripe key, no Parasut credentials
    close_month(instance, OCTOBER, definitions=defs)
    with psycopg.connect(db_url, autocommit=True) as conn:  # as if issued by hand before the pipeline ran
        conn.execute("UPDATE invoices SET status = 'ISSUED'")
    usage_store.insert_arrow("requests_raw", _late_rows())
    run_ids = dispute_month(instance, OCTOBER, [date(2026, 10, 5), date(2026, 10, 12)], definitions=defs)
    assert [(d[0], d[2], d[7]) for d in _documents(db_url)] == [
        ("CTR-A:2026-10:v2:supplementary", "DRAFT", "0.0300"), ("CTR-P:2026-10:v2:credit-note", "DRAFT", "-2.4000"),
        ("CTR-V:2026-10:v2:credit-note", "DRAFT", "-0.1500")]
    with psycopg.connect(db_url) as conn:
        recorded = conn.execute("""SELECT invoice_id, payload->>'path', payload->'params'->'lines'
                                   FROM sink_outbox WHERE status = 'DRY_RUN' AND invoice_id LIKE '%%:v2:%%'
                                   AND payload->>'path' IN ('/v1/credit_notes', '/purchase_bills', '/v1/invoices')
                                   ORDER BY 1""").fetchall()
        versions = conn.execute("SELECT invoice_id, status FROM invoices WHERE version = 2 AND kind = 'INVOICE' "
                                "ORDER BY 1").fetchall()
    assert recorded == [
        ("CTR-A:2026-10:v2:supplementary", "/v1/invoices", None),
        ("CTR-P:2026-10:v2:credit-note", "/purchase_bills", None),
        ("CTR-V:2026-10:v2:credit-note", "/v1/credit_notes",
         [{"type": "custom_line_item", "quantity": "1", "unit_amount": "15", "description": "Correction: ETH Mainnet - 7 requests (invoiced as: ETH Mainnet - 5 requests)"}])]
    # the versions wait for their documents; a live run later issues exactly these
    assert versions == [("CTR-A:2026-10:v2", "CORRECTING"), ("CTR-B:2026-10:v2", "CORRECTED"),
                        ("CTR-P:2026-10:v2", "CORRECTING"), ("CTR-V:2026-10:v2", "CORRECTING")]
    assert _checks(instance, run_ids[-1])["all_corrections_issued"] is True


@contextmanager
def _issued_october(db_url: str, chdb_path, instance, s3_endpoint):
    """October closed and issued through local Stripe and Parasut servers: (definitions, Stripe server)."""
    AuditBucket("billing-audit", s3_endpoint).create()
    with StripeServer() as stripe_server, ParasutServer(rate_limit=None, job_seconds_until_done=0.02) as parasut_server:
        defs = product_defs(
            db_url, chdb_path, audit_storage=AuditStorageResource(endpoint_url=s3_endpoint, bucket="billing-audit"),
            stripe=StripeResource(api_key="sk_test_local", api_base=stripe_server.url, max_ops_per_second=500),
            parasut=ParasutResource(base_url=parasut_server.url, company_id="1234", client_id="cid",
                                    client_secret="csecret", username="api@example.test", password="pw",
                                    requests_per_window=1000, window_seconds=1.0, poll_interval_seconds=0.01))
        close_month(instance, OCTOBER, definitions=defs)
        issue_month(instance, OCTOBER, definitions=defs)
        yield defs, stripe_server


def _late_rows_of(day: date) -> pa.Table:
    late = _late_rows()
    return late.filter(pa.compute.equal(pa.compute.cast(late.column("timestamp"), pa.date32()),
                                        pa.scalar(day, pa.date32())))


def test_a_voided_invoice_is_not_billed_again_by_a_dispute_of_its_month(scenario, chdb_path, usage_store, instance,
                                                                       s3_endpoint, signing_key):
    """CTR-C's 500.75 EUR voided in Stripe; a dispute of 5 October (late usage of CTR-A and CTR-P,
    none of CTR-C's) re-drafted CTR-C as v2 and issued it as a new 500.75 EUR invoice, and said
    nothing had changed."""
    db_url = scenario
    with _issued_october(db_url, chdb_path, instance, s3_endpoint) as (defs, stripe_server):
        stripe = stripe_server.stripe
        [voided] = [i for i in stripe.invoices_for("CTR-C:2026-10:v1") if i["status"] != "draft"]
        stripe.handle("POST", f"/v1/invoices/{voided['id']}/void", {}, None, "sk")
        sync_events(db_url, gateway(stripe_server), None)
        invoices_before = len(stripe.state.invoices)

        usage_store.insert_arrow("requests_raw", _late_rows_of(date(2026, 10, 5)))
        dispute_month(instance, OCTOBER, [date(2026, 10, 5)], definitions=defs)
        report, stopped = dispute_report(db_url, OCTOBER, {})
        new_stripe_invoices = [i["metadata"].get("invoice_id") for i in list(stripe.state.invoices.values())[
            invoices_before:]]
    with psycopg.connect(db_url) as conn:
        c_versions = conn.execute("SELECT invoice_id, status, total::text FROM invoices WHERE contract_id = 'CTR-C' "
                                  "ORDER BY 1").fetchall()
    assert c_versions == [("CTR-C:2026-10:v1", "VOID", "500.7500")]
    assert new_stripe_invoices == ["CTR-A:2026-10:v2:supplementary"]  # CTR-A's late requests only
    assert "VOIDED CTR-C:2026-10:v1: voided in the sink; its month is not drafted or billed again" in report
    assert stopped is False


def test_a_re_run_of_an_issued_turkish_month_keeps_the_kdv_rate_it_was_issued_at(scenario, chdb_path, usage_store,
                                                                                instance, s3_endpoint, signing_key):
    """CTR-P issued at KDV 20%; its contract then set to 10%, and 5 October disputed (2 late requests:
    the volume price falls, 8.00 -> 6.00 TRY). The supply was October's, at 20%: the credit note
    takes back 2.00 + 0.40 KDV and v2 keeps 20% (it was re-taxed at 10%: KDV 0.60 where the issued
    documents add up to 1.20)."""
    db_url = scenario
    with _issued_october(db_url, chdb_path, instance, s3_endpoint) as (defs, _stripe_server):
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("UPDATE contracts SET vat_rate = 0.10 WHERE contract_id = 'CTR-P'")
        usage_store.insert_arrow("requests_raw", _late_rows_of(date(2026, 10, 5)))
        dispute_month(instance, OCTOBER, [date(2026, 10, 5)], definitions=defs)
    with psycopg.connect(db_url) as conn:
        versions = conn.execute("SELECT invoice_id, status, tax_rate::text, subtotal::text, tax::text, total::text "
                                "FROM invoices WHERE contract_id = 'CTR-P' ORDER BY 1").fetchall()
    assert versions == [("CTR-P:2026-10:v1", "ISSUED", "0.2000", "8.0000", "1.6000", "9.6000"),
                        ("CTR-P:2026-10:v2", "CORRECTED", "0.2000", "6.0000", "1.2000", "7.2000"),
                        ("CTR-P:2026-10:v2:credit-note", "ISSUED", "0.2000", "-2.0000", "-0.4000", "-2.4000")]


def test_a_supplementary_voided_since_is_named_by_the_next_dispute_report(scenario, chdb_path, usage_store,
                                                                         instance, s3_endpoint, signing_key):
    """CTR-A's supplementary invoice (+0.03 USD) voided in Stripe after the dispute that issued it:
    what CTR-A holds no longer adds up to its version in force. The report said "no amount changed"
    and the command exited 0 while corrections_add_up was red."""
    db_url = scenario
    with _issued_october(db_url, chdb_path, instance, s3_endpoint) as (defs, stripe_server):
        usage_store.insert_arrow("requests_raw", _late_rows_of(date(2026, 10, 5)))
        dispute_month(instance, OCTOBER, [date(2026, 10, 5)], definitions=defs)
        before = {d[0]: d[7] for d in month_corrections(db_url, OCTOBER)}
        [supplementary] = stripe_server.stripe.invoices_for("CTR-A:2026-10:v2:supplementary")
        stripe_server.stripe.handle("POST", f"/v1/invoices/{supplementary['id']}/void", {}, None, "sk")
        sync_events(db_url, gateway(stripe_server), None)
    report, stopped = dispute_report(db_url, OCTOBER, {k: v for k, v in before.items()
                                                       if k != "CTR-A:2026-10:v2:supplementary"})
    assert stopped is True
    assert report[0] == "supplementary CTR-A:2026-10:v2:supplementary: 0.0300 USD correcting CTR-A:2026-10:v1, VOID"
    assert report[1:] == ["NOT ADDING UP CTR-A:2026-10:v2: CTR-A:2026-10:USAGE:requests:eth-mainnet: the issued "
                          "documents carry 0.1100, the version in force 0.1400"]


def test_the_summary_lists_every_correction_under_the_version_in_force(scenario, chdb_path, usage_store, instance,
                                                                       s3_endpoint, signing_key):
    """Two disputes of CTR-A's October, each with late requests: v3 is in force, and the summary
    listed only v3's supplementary invoice, not v2's, though the customer holds both."""
    db_url = scenario
    with _issued_october(db_url, chdb_path, instance, s3_endpoint) as (defs, _stripe_server):
        usage_store.insert_arrow("requests_raw", _late_rows_of(date(2026, 10, 5)))
        dispute_month(instance, OCTOBER, [date(2026, 10, 5)], definitions=defs)
        usage_store.insert_arrow("requests_raw", _events(
            [_row(ts(2026, 10, 5, 20, 0, i), f"late2-a{i}", "org_a", "prj_a1", "eth-mainnet") for i in range(2)]))
        dispute_month(instance, OCTOBER, [date(2026, 10, 5)], definitions=defs)
    summary = format_month_summary(db_url, OCTOBER).splitlines()
    block = summary[next(i for i, line in enumerate(summary) if line.startswith("CTR-A:2026-10:v3  Alpha Ltd")):]
    documents = [line.split()[:3] for line in block[:12] if line.startswith("    supplementary")]
    assert documents == [["supplementary", "invoice", "CTR-A:2026-10:v2:supplementary"],
                         ["supplementary", "invoice", "CTR-A:2026-10:v3:supplementary"]]
