"""The analysts' marts: dbt on the billing database, run by Dagster one month at a time, its tests as
asset checks, readable by the read-only analyst role and nothing else."""

from __future__ import annotations

import uuid
from decimal import Decimal

import dagster as dg
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from billing_pipeline.assets.analytics import analytics_monthly_marts, analytics_reference
from billing_pipeline.close import close_month
from billing_pipeline.domain.periods import Period
from billing_pipeline.stores.postgres import transaction
from month_fixture import amend_ctr_d_to_filler_plus, split_ctr_a_on_the_10th

D = Decimal


def _build(defs, instance) -> dict[str, bool]:
    """The reference models once, then October's marts; returns every dbt test's result."""
    job = defs.resolve_implicit_global_asset_job_def()
    reference = job.execute_in_process(instance=instance, asset_selection=list(analytics_reference.keys))
    monthly = job.execute_in_process(instance=instance, asset_selection=list(analytics_monthly_marts.keys),
                                     partition_key="2026-10-01")
    assert reference.success and monthly.success
    checks = [*reference.get_asset_check_evaluations(), *monthly.get_asset_check_evaluations()]
    return {f"{c.asset_key.to_user_string()}:{c.check_name}": c.passed for c in checks}


def _close_and_build(defs, instance) -> None:
    """October closed, then the marts built, every dbt test passing."""
    close_month(instance, Period.parse_month("2026-10"), definitions=defs)
    results = _build(defs, instance)
    assert all(results.values()), {k: v for k, v in results.items() if not v}


def _discount(conn, contract_id: str, discount_id: str, percent: int, description: str) -> None:
    conn.execute("""INSERT INTO contract_discounts (contract_id, discount_id, kind, value, valid_from, description)
                    VALUES (%s, %s, 'PERCENT', %s, '2026-10-01', %s)""", (contract_id, discount_id, percent, description))


@pytest.fixture
def marts(october, billing_defs, instance):
    close_month(instance, Period.parse_month("2026-10"), definitions=billing_defs)
    return _build(billing_defs, instance)


def test_the_marts_build_for_a_month_and_every_dbt_test_passes(october, billing_defs, instance, marts):
    assert len(marts) >= 30 and all(marts.values()), {k: v for k, v in marts.items() if not v}
    assert marts["marts/revenue_per_chain:sums_to_documents_revenue_per_chain_is_issued__revenue_issued"] is True
    assert marts["marts/revenue_per_chain:sums_to_documents_revenue_per_chain_is_current__revenue"] is True
    with psycopg.connect(october) as conn:
        chains = conn.execute("""SELECT chain, currency, revenue, revenue_usd, revenue_issued, requests
                                 FROM analytics_marts.revenue_per_chain ORDER BY currency, chain""").fetchall()
        plans = conn.execute("""SELECT plan_id, currency, contracts, revenue, revenue_usd
                                FROM analytics_marts.revenue_per_plan ORDER BY plan_id""").fetchall()
        top = conn.execute("""SELECT usage_rank, org_id, requests FROM analytics_marts.top_customers_by_usage
                              ORDER BY usage_rank, org_id""").fetchall()
        margin = conn.execute("""SELECT chain, requests, revenue_usd, infra_cost_usd, margin_usd
                                 FROM analytics_marts.margin_per_chain ORDER BY chain""").fetchall()
    # October 2026 reporting rates (seed): EUR 1.1240 USD, TRY 1 / 44.65 USD
    assert chains == [
        ("all chains", "EUR", D("500.7500"), D("562.8430"), D(0), D(0)),
        ("base-mainnet", "EUR", D("0.0000"), D("0.0000"), D(0), D(5)),
        ("eth-mainnet", "EUR", D("0.0000"), D("0.0000"), D(0), D(8)),
        ("all chains", "TRY", D("25000.0000"), D("559.9105"), D(0), D(0)),
        ("eth-mainnet", "TRY", D("0.0000"), D("0.0000"), D(0), D(2)),
        ("bsc-mainnet", "USD", D("0.0500"), D("0.0500"), D(0), D(3)),
        ("eth-mainnet", "USD", D("0.1100"), D("0.1100"), D(0), D(7)),
        ("polygon-mainnet", "USD", D("0.0300"), D("0.0300"), D(0), D(31))]
    assert plans == [("filler", "USD", 1, D("0.0300"), D("0.0300")), ("fixed_tr", "TRY", 1, D("25000.0000"), D("559.9105")),
                     ("hybrid_eur", "EUR", 1, D("500.7500"), D("562.8430")), ("pro_test", "USD", 1, D("0.1600"), D("0.1600"))]
    assert top == [(1, "org_d", 31), (2, "org_c", 13), (3, "org_a", 10), (4, "org_x", 4), (5, "org_b", 2)]
    # org_c's 562.8430 shared 8:5 over eth and base; org_b's 559.9105 all on eth (its only chain);
    # costs: eth 4,620 (from July 2026) + 21 requests x 0.90 / 1M
    assert margin[2] == ("eth-mainnet", 21, D("906.3854"), D("4620.0000"), D("-3713.6146"))
    assert margin[0] == ("base-mainnet", 5, D("216.4781"), D("1430.0000"), D("-1213.5219"))



def test_requests_per_chain_are_requests_whatever_else_the_plans_price(october, billing_defs, instance):
    """A plan pricing egress beside requests: its egress lines' gigabytes are not requests (the
    mart summed every usage line's quantity, so polygon showed 31.0000155 requests)."""
    from billing_pipeline.domain.plans import MeteredCharge, Plan
    from billing_pipeline.domain.price_models import PerUnit
    from billing_pipeline.stores.plans import sync_plans

    with psycopg.connect(october) as conn:
        sync_plans(conn, {"filler": Plan(plan_id="filler", name="Filler", type="METERED", currency="USD", charges=[
            MeteredCharge(meter="requests", unit="request", price=PerUnit(unit_price=D("0.001"))),
            MeteredCharge(meter="egress_bytes", unit="GB", price=PerUnit(unit_price=D("0.09")))])})
    _close_and_build(billing_defs, instance)
    with psycopg.connect(october) as conn:
        # org_d's 31 requests of 500 bytes: 0.0000155 GB of egress, a line of 0.00
        assert conn.execute("""SELECT sum(quantity) FROM invoice_lines WHERE invoice_id = 'CTR-D:2026-10:v1'""").fetchone() \
            == (D("31.0000155"),)
        chains = conn.execute("""SELECT chain, currency, requests, revenue, customers FROM analytics_marts.revenue_per_chain
                                 WHERE currency = 'USD' ORDER BY chain""").fetchall()
    assert chains == [("bsc-mainnet", "USD", 3, D("0.0500"), 1), ("eth-mainnet", "USD", 7, D("0.1100"), 1),
                      ("polygon-mainnet", "USD", 31, D("0.0300"), 1)]


def test_a_contract_amended_mid_month_bills_each_plan_its_own_days(october, billing_defs, instance):
    """CTR-D moves from filler to filler_plus on 16 October: its 0.02 of the first half is filler's
    revenue, its 0.03 of the second half filler_plus's (the mart put all 0.05 under the contract's
    signed plan, and filler_plus, which priced half the month, was missing). CTR-A, discounted in
    full, is billed nothing: no top customer (ranked, customers billed nothing tied for a place)."""
    with psycopg.connect(october) as conn:
        amend_ctr_d_to_filler_plus(conn)
        _discount(conn, "CTR-A", "WAIVED", 100, "Goodwill: October waived")
    _close_and_build(billing_defs, instance)
    with psycopg.connect(october) as conn:
        charges = conn.execute("""SELECT charge_id, plan_id FROM rated_charges WHERE contract_id = 'CTR-D'
                                  ORDER BY position""").fetchall()
        plans = conn.execute("""SELECT plan_id, plan_name, currency, contracts, revenue, revenue_usd
                                FROM analytics_marts.revenue_per_plan WHERE currency = 'USD' ORDER BY plan_id""").fetchall()
        top = conn.execute("""SELECT revenue_rank, org_id, revenue_usd FROM analytics_marts.top_customers_by_revenue
                              ORDER BY revenue_rank""").fetchall()
    assert charges == [("CTR-D:2026-10:p1:USAGE:requests:polygon-mainnet", "filler"),
                       ("CTR-D:2026-10:p2:USAGE:requests:polygon-mainnet", "filler_plus")]
    assert plans == [("filler", "Filler", "USD", 1, D("0.0200"), D("0.0200")),
                     ("filler_plus", "Filler+", "USD", 1, D("0.0300"), D("0.0300")),
                     ("pro_test", "Pro", "USD", 1, D("0.0000"), D("0.0000"))]
    # org_c's 500.75 EUR at 1.1240, org_b's 25,000 TRY at 1 / 44.65, org_d's 0.05 USD; not org_a
    assert top == [(1, "org_c", D("562.8430")), (2, "org_b", D("559.9105")), (3, "org_d", D("0.0500"))]


def test_a_fee_tied_to_no_chain_is_shared_by_the_traffic_of_the_days_its_contract_covers(october, billing_defs,
                                                                                           instance):
    """org_a's CTR-A ends on 10 October (its ETH requests, on the 5th) and CTR-A2 follows (its BSC
    ones, the 10th and 31st). CTR-A2's discount of -0.03 (half its 0.05) is all BSC's: the mart
    shared it over org_a's whole month (-0.021 ETH, -0.009 BSC), traffic CTR-A2 never billed."""
    with transaction(october) as conn:
        split_ctr_a_on_the_10th(conn)
        _discount(conn, "CTR-A2", "HALF", 50, "Half off")
    _close_and_build(billing_defs, instance)
    with psycopg.connect(october) as conn:
        a2 = conn.execute("""SELECT description, amount FROM invoice_lines WHERE invoice_id = 'CTR-A2:2026-10:v1'
                             ORDER BY line_no""").fetchall()
        margin = conn.execute("""SELECT chain, requests, revenue_usd FROM analytics_marts.margin_per_chain
                                 WHERE chain IN ('bsc-mainnet', 'eth-mainnet') ORDER BY chain""").fetchall()
    assert a2 == [("BSC Mainnet - 3 requests", D("0.0500")), ("Half off (-50%)", D("-0.0300"))]
    # as in the month without the split (test above), but BSC's 0.05 less CTR-A2's 0.03
    assert margin == [("bsc-mainnet", 3, D("0.0200")), ("eth-mainnet", 21, D("906.3854"))]


def test_receivables_are_what_issued_invoices_still_have_open_after_their_credit_notes(october, billing_defs,
                                                                                      instance):
    """A credit note reduces what the invoice it corrects has open, as Stripe credits an open invoice
    first (the dispute scenario: 0.50 invoiced, 0.15 credited, Stripe's amount_due 0.35). The mart
    listed every issued invoice at its full total; one credited in full is not open at all."""
    close_month(instance, Period.parse_month("2026-10"), definitions=billing_defs)
    with psycopg.connect(october) as conn:
        conn.execute("""UPDATE invoices SET status = 'ISSUED', issued_at = '2026-11-02T09:00:00Z'
                        WHERE contract_id IN ('CTR-A', 'CTR-C', 'CTR-D')""")
        # two credit notes with a line each (written as drafts: an issued document's lines are frozen)
        conn.execute("""INSERT INTO invoices (invoice_id, contract_id, org_id, period_start, period_end, version, status,
                            kind, corrects_invoice_id, currency, subtotal, tax_rate, tax, total, issue_date, issued_at)
                        VALUES ('CTR-A:2026-10:v2:credit-note', 'CTR-A', 'org_a', '2026-10-01', '2026-11-01', 2,
                                'DRAFT', 'CREDIT_NOTE', 'CTR-A:2026-10:v1', 'USD', -0.05, 0, 0, -0.05, '2026-11-01',
                                '2026-11-05T09:00:00Z'),
                               ('CTR-D:2026-10:v2:credit-note', 'CTR-D', 'org_d', '2026-10-01', '2026-11-01', 2,
                                'DRAFT', 'CREDIT_NOTE', 'CTR-D:2026-10:v1', 'USD', -0.03, 0, 0, -0.03, '2026-11-01',
                                '2026-11-05T09:00:00Z')""")
        conn.execute("""INSERT INTO invoice_lines (invoice_id, line_no, charge_id, description, quantity, unit_price,
                            amount, currency)
                        SELECT i.contract_id || ':2026-10:v2:credit-note', l.line_no, l.charge_id, l.description, 0, 0,
                               CASE WHEN i.contract_id = 'CTR-A' THEN -0.05 ELSE -0.03 END, l.currency
                        FROM invoice_lines l JOIN invoices i USING (invoice_id)
                        WHERE i.invoice_id IN ('CTR-A:2026-10:v1', 'CTR-D:2026-10:v1') AND l.line_no = 1""")
        conn.execute("UPDATE invoices SET status = 'ISSUED' WHERE kind = 'CREDIT_NOTE'")
    assert all(_build(billing_defs, instance).values())
    with psycopg.connect(october) as conn:
        open_items = conn.execute("""SELECT invoice_id, kind, total, credited, amount_due, issued_on::text, due_on::text
                                     FROM analytics_marts.invoice_ageing ORDER BY invoice_id""").fetchall()
    assert open_items == [
        ("CTR-A:2026-10:v1", "INVOICE", D("0.1600"), D("-0.0500"), D("0.1100"), "2026-11-02", "2026-12-02"),
        ("CTR-C:2026-10:v1", "INVOICE", D("500.7500"), D(0), D("500.7500"), "2026-11-02", "2026-12-02")]

def test_an_issued_month_bills_its_issued_versions_and_each_invoice_falls_due_as_its_customer_was_told(
        october, billing_defs, instance):
    """A draft made after the month was issued (a discount not yet decided) is not what the month
    bills until the dispute flow issues it: revenue followed it (as `billing invoices` does not).
    Parasut's invoice falls due its issue date plus the terms (the e-invoice's due_date), not from
    when the sink ran; an invoice charged automatically is due at once."""
    october_period = Period.parse_month("2026-10")
    close_month(instance, october_period, definitions=billing_defs)
    with psycopg.connect(october) as conn:
        conn.execute("UPDATE contracts SET collection_method = 'charge_automatically' WHERE contract_id = 'CTR-C'")
        conn.execute("UPDATE invoices SET status = 'ISSUED', issued_at = '2026-11-04T09:00:00Z'")
        conn.execute("UPDATE invoices SET sink = 'PARASUT' WHERE contract_id = 'CTR-B'")
        issued = conn.execute("SELECT subtotal FROM invoices WHERE contract_id = 'CTR-D'").fetchone()[0]
        _discount(conn, "CTR-D", "HALF", 50, "Half off")
    close_month(instance, october_period, definitions=billing_defs)  # CTR-D:2026-10:v2, a draft
    assert all(_build(billing_defs, instance).values())
    with psycopg.connect(october) as conn:
        assert conn.execute("SELECT status, subtotal FROM invoices WHERE invoice_id = 'CTR-D:2026-10:v2'").fetchone() \
            == ("DRAFT", D("0.0100"))  # 0.03 less half of it, rounded as its line (-0.02)
        filler = conn.execute("SELECT revenue FROM analytics_marts.revenue_per_plan WHERE plan_id = 'filler'").fetchone()
        due = conn.execute("""SELECT invoice_id, issued_on::text, due_on::text FROM analytics_marts.invoice_ageing
                              WHERE invoice_id IN ('CTR-B:2026-10:v1', 'CTR-C:2026-10:v1') ORDER BY 1""").fetchall()
        status = conn.execute("""SELECT status, is_current, documents, total FROM analytics_marts.invoice_status
                                 WHERE currency = 'USD' AND kind = 'INVOICE' ORDER BY 1""").fetchall()
    assert filler == (issued,) == (D("0.0300"),)
    # the month's USD invoices: CTR-A's and CTR-D's issued v1 in force, CTR-D's v2 draft apart
    assert status == [("DRAFT", False, 1, D("0.0100")), ("ISSUED", True, 2, D("0.1900"))]
    assert due == [("CTR-B:2026-10:v1", "2026-11-01", "2026-12-01"), ("CTR-C:2026-10:v1", "2026-11-04", "2026-11-04")]


def test_a_rerun_of_the_month_replaces_its_rows_and_the_preview_shows_in_dagster(october, billing_defs, instance,
                                                                               marts):
    job = billing_defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, asset_selection=list(analytics_monthly_marts.keys),
                                    partition_key="2026-10-01")
    with psycopg.connect(october) as conn:
        assert conn.execute("SELECT count(*) FROM analytics_marts.revenue_per_chain").fetchone() == (8,)
    [mat] = [m for m in result.asset_materializations_for_node("analytics_monthly_marts")
             if m.asset_key == dg.AssetKey(["marts", "revenue_per_chain"])]
    assert mat.partition == "2026-10-01"
    assert mat.metadata["revenue_by_currency"].value == "500.7500 EUR, 25,000.0000 TRY, 0.1900 USD"
    assert "| 2026-10-01 | all chains | EUR | 500.7500 | 562.8430 |" in mat.metadata["preview"].value


def test_analysts_read_the_marts_and_nothing_else(october, marts):
    login = f"analyst_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(october, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {login} LOGIN PASSWORD 'pw' IN ROLE billing_analyst")
    try:
        # the same server and database as the superuser's URL, whatever its form (embedded: a socket)
        with psycopg.connect(make_conninfo(october, user=login, password="pw"), autocommit=True) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (login,)
            assert conn.execute("SELECT count(*) FROM analytics_marts.revenue_per_chain").fetchone() == (8,)
            for sql in ("SELECT count(*) FROM public.invoices", "DELETE FROM analytics_marts.revenue_per_chain",
                        "SELECT count(*) FROM public.ledger"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(sql)
    finally:
        with psycopg.connect(october, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {login}")
            conn.execute(f"DROP ROLE {login}")


def test_dbt_connects_as_the_pipeline_does_over_tcp_or_the_embedded_socket():
    from billing_pipeline.analytics.project import connection_env

    assert connection_env("postgresql://bill:s%40cret@db.internal:6432/billing") == {
        "BILLING_DBT_HOST": "db.internal", "BILLING_DBT_PORT": "6432", "BILLING_DBT_USER": "bill",
        "BILLING_DBT_PASSWORD": "s@cret", "BILLING_DBT_DBNAME": "billing"}
    assert connection_env("postgresql://postgres:@/billing?host=/state/postgres")["BILLING_DBT_HOST"] == "/state/postgres"


def test_the_reference_models_rebuild_at_five_and_the_latest_months_marts_at_six(billing_defs, instance):
    from datetime import datetime, timezone

    analytics = dg.AssetSelection.groups("analytics")

    def requested(at, cursor=None):
        result = dg.evaluate_automation_conditions(billing_defs, instance, asset_selection=analytics,
                                                   evaluation_time=at, cursor=cursor)
        keys = {k.to_user_string() for k in analytics.resolve(billing_defs.resolve_asset_graph())
                if result.get_requested_partitions(k)}
        return keys, result.cursor

    keys, cursor = requested(datetime(2026, 11, 2, 4, 0, tzinfo=timezone.utc))
    assert keys == set()
    keys, cursor = requested(datetime(2026, 11, 2, 5, 1, tzinfo=timezone.utc), cursor)
    assert keys == {k.to_user_string() for k in analytics_reference.keys}
    for key in analytics_reference.keys:  # the 05:00 run done
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key))
    result = dg.evaluate_automation_conditions(billing_defs, instance, asset_selection=analytics, cursor=cursor,
                                               evaluation_time=datetime(2026, 11, 2, 6, 1, tzinfo=timezone.utc))
    assert {k.to_user_string(): result.get_requested_partitions(k) for k in analytics_monthly_marts.keys} == {
        k.to_user_string(): {"2026-10-01"} for k in analytics_monthly_marts.keys}
