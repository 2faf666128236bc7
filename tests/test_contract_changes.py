"""Amendments, discounts and prepaid credit through the real month close (PostgreSQL + chdb)."""

from __future__ import annotations

import re
from decimal import Decimal

import psycopg
import pyarrow as pa
import pytest

from billing_pipeline.close import close_month
from billing_pipeline.domain.periods import Period
from billing_pipeline.domain.plans import MeteredCharge, Plan
from billing_pipeline.domain.price_models import PerUnit
from billing_pipeline.steps.invoicing import credit_balances
from billing_pipeline.steps.rating import load_terms
from billing_pipeline.stores.plans import sync_plans
from billing_pipeline.stores.postgres import transaction
from month_fixture import amend_ctr_d_to_filler_plus, split_ctr_a_on_the_10th

D = Decimal


def test_amendment_discount_and_credit_in_a_month_close(october, billing_defs, instance):
    with transaction(october) as conn:
        amend_ctr_d_to_filler_plus(conn)
        conn.execute("""INSERT INTO contract_discounts (contract_id, discount_id, kind, value, valid_from, description)
                        VALUES ('CTR-B', 'WELCOME10', 'PERCENT', 10, '2026-10-01', 'Welcome discount')""")
        conn.execute("""INSERT INTO credit_grants (grant_id, contract_id, amount, currency, granted_on, description)
                        VALUES ('G1', 'CTR-C', 1000, 'EUR', '2026-09-15', 'Prepaid top-up')""")
    close_month(instance, Period.parse_month("2026-10"), definitions=billing_defs)

    with psycopg.connect(october) as conn:
        invoices = {r[0]: tuple(str(v) for v in r[1:]) for r in conn.execute(
            "SELECT contract_id, subtotal, tax, credits_applied, total FROM invoices")}
        d_lines = conn.execute("""SELECT description, amount FROM invoice_lines
                                  WHERE invoice_id = 'CTR-D:2026-10:v1' ORDER BY line_no""").fetchall()
    # CTR-D: 15 days at 0.001 (0.015 -> 0.02), then 16 days at 0.002 (0.032 -> 0.03)
    assert d_lines == [("Polygon PoS - 15 requests (01 Oct-15 Oct)", D("0.0200")),
                       ("Polygon PoS - 16 requests (16 Oct-31 Oct)", D("0.0300"))]
    assert invoices["CTR-D"] == ("0.0500", "0.0000", "0.0000", "0.0500")
    # CTR-B: 25,000 - 10% = 22,500 + 20% KDV
    assert invoices["CTR-B"] == ("22500.0000", "4500.0000", "0.0000", "27000.0000")
    # CTR-C: 500.75 fully paid from the 1,000 prepaid
    assert invoices["CTR-C"] == ("500.7500", "0.0000", "500.7500", "0.0000")

    with transaction(october) as conn:
        november = Period.parse_month("2026-11")
        terms = {t.contract_id: t for t in load_terms(conn, november)}
        assert credit_balances(conn, november, terms) == {"CTR-C": D("499.2500")}  # carried to November
        # October issued, then re-drafted using less credit, and that correction stopped (it would give
        # credit back): the draft was never issued, so November still has 499.25 (it counted 699.25)
        conn.execute("UPDATE invoices SET status = 'ISSUED' WHERE invoice_id = 'CTR-C:2026-10:v1'")
        conn.execute("""INSERT INTO invoices (invoice_id, contract_id, org_id, period_start, period_end, version, status,
                            currency, subtotal, tax_rate, tax, credits_applied, total)
                        SELECT 'CTR-C:2026-10:v2', contract_id, org_id, period_start, period_end, 2, 'DRAFT', currency,
                               subtotal, tax_rate, tax, 300.75, 200 FROM invoices WHERE invoice_id = 'CTR-C:2026-10:v1'""")
        assert credit_balances(conn, november, terms) == {"CTR-C": D("499.2500")}


@pytest.mark.parametrize("zone, bsc_requests, amount", [
    # Istanbul (UTC+3): b0 and b5 (30 Sep, ~23:59 UTC) are 1 October there; b1 (31 Oct 23:59 UTC) is November
    ("Europe/Istanbul", 4, "0.0600"),
    # New York (UTC-4): b0 and b5 are still 30 September; b1 and b4 (1 Nov 00:00 UTC) are 31 October
    ("America/New_York", 4, "0.0600"),
    ("UTC", 3, "0.0500"),
])
def test_usage_is_billed_on_the_customers_calendar_days(october, billing_defs, instance, zone, bsc_requests,
                                                        amount):
    with transaction(october) as conn:
        conn.execute("UPDATE contracts SET timezone = %s WHERE contract_id = 'CTR-A'", (zone,))
    close_month(instance, Period.parse_month("2026-10"), definitions=billing_defs)
    with psycopg.connect(october) as conn:
        lines = conn.execute("""SELECT description, amount FROM invoice_lines
                                WHERE invoice_id = 'CTR-A:2026-10:v1' ORDER BY line_no""").fetchall()
    assert lines[0] == (f"BSC Mainnet - {bsc_requests} requests", D(amount))  # x 0.015, half-up
    assert lines[1] == ("ETH Mainnet - 7 requests", D("0.1100"))


@pytest.mark.parametrize("auto_renew, subtotal", [(False, "12096.7700"), (True, "25000.0000")])
def test_term_end_manual_or_auto_renewed(october, billing_defs, instance, auto_renew, subtotal):
    with transaction(october) as conn:
        conn.execute("UPDATE contracts SET end_at = '2026-10-16T00:00:00Z', auto_renew = %s WHERE contract_id = 'CTR-B'",
                     (auto_renew,))
    close_month(instance, Period.parse_month("2026-10"), definitions=billing_defs)
    with psycopg.connect(october) as conn:
        # manual: the term ends on the 16th, 15/31 of 25,000; auto-renewed: the next term follows
        assert str(conn.execute("SELECT subtotal FROM invoices WHERE contract_id = 'CTR-B'").fetchone()[0]) == subtotal


def test_contract_of_another_type_than_its_plan_is_refused(october, billing_defs, instance):
    from billing_pipeline.close import RunFailedError

    with transaction(october) as conn:
        conn.execute("UPDATE contracts SET contract_type = 'FIXED' WHERE contract_id = 'CTR-A'")
    with pytest.raises(RunFailedError, match="contract CTR-A is FIXED but its plan pro_test is METERED"):
        close_month(instance, Period.parse_month("2026-10"), definitions=billing_defs)


@pytest.mark.parametrize("plan, refusal", [
    (Plan(plan_id="fixed_yearly", name="Enterprise (yearly)", type="FIXED", currency="USD", billing_cycle="YEARLY",
          base_fee=D(12000)),
     "names plan fixed_yearly, billed YEARLY; the contract is billed MONTHLY (a change of billing cycle is a new "
     "contract)"),
    (Plan(plan_id="filler_eur", name="Filler EU", type="METERED", currency="EUR",
          charges=[MeteredCharge(meter="requests", unit="request", price=PerUnit(unit_price=D("0.001")))]),
     "names plan filler_eur, priced in EUR; the contract bills in USD"),
])
def test_an_amendment_to_another_billing_cycle_or_currency_is_refused_by_name(october, billing_defs, instance, plan,
                                                                              refusal):
    """CTR-D (monthly, USD) amended from 16 October. To a yearly plan it billed no fee at all: a yearly
    fee is charged in the month its contract year starts (January). To a EUR plan rating failed
    without naming the amendment."""
    from billing_pipeline.close import RunFailedError

    with transaction(october) as conn:
        sync_plans(conn, {plan.plan_id: plan})
        conn.execute("""INSERT INTO contract_amendments (contract_id, effective_from, plan_id, reason)
                        VALUES ('CTR-D', '2026-10-16T00:00:00Z', %s, 'upgrade')""", (plan.plan_id,))
    with pytest.raises(RunFailedError, match=re.escape(f"contract CTR-D: amendment from 2026-10-16 00:00 UTC {refusal}")):
        close_month(instance, Period.parse_month("2026-10"), definitions=billing_defs)


def test_overlapping_contracts_for_one_org_are_refused(october, billing_defs, instance):
    from billing_pipeline.close import RunFailedError

    with transaction(october) as conn:
        conn.execute("""INSERT INTO contracts (contract_id, org_id, plan_id, contract_type, currency, region, start_at)
                        VALUES ('CTR-A2', 'org_a', 'pro_test', 'METERED', 'USD', 'GLOBAL', '2026-10-10T00:00:00Z')""")
    with pytest.raises(RunFailedError, match="org org_a: contracts CTR-A and CTR-A2 overlap in 2026-10; the same usage "
                                             "would be billed twice"):
        close_month(instance, Period.parse_month("2026-10"), definitions=billing_defs)


def test_a_contract_ending_inside_the_month_and_its_successor_each_bill_their_own_days(october, billing_defs,
                                                                                      instance):
    """org_a's ETH requests fall on 5 October, its BSC ones on the 10th and the 31st: CTR-A, ended at
    the 10th, bills the first; CTR-A2, from the 10th, the others (a contract that does not cover the
    whole month is rated on its own days, apart from those that do)."""
    with transaction(october) as conn:
        split_ctr_a_on_the_10th(conn)
    close_month(instance, Period.parse_month("2026-10"), definitions=billing_defs)
    with psycopg.connect(october) as conn:
        lines = conn.execute("""SELECT invoice_id, description, amount FROM invoice_lines
                                WHERE invoice_id LIKE 'CTR-A%%' ORDER BY invoice_id, line_no""").fetchall()
    assert lines == [("CTR-A2:2026-10:v1", "BSC Mainnet - 3 requests", D("0.0500")),  # x 0.015, half-up
                     ("CTR-A:2026-10:v1", "ETH Mainnet - 7 requests", D("0.1100"))]


@pytest.mark.parametrize("start_at, end_at, billed, unrated", [
    # signed at 01:00 on the 16th in Istanbul (22:00 UTC on the 15th): the 15th's request (12:00 UTC,
    # 15:00 there) was neither billed nor unrated when coverage was counted on UTC days (14 unrated)
    ("2026-10-15T22:00:00Z", None, 16, 15),
    # ended at 01:00 on the 21st there: the 20th's request was billed and also counted unrated (12)
    ("2026-01-01T00:00:00Z", "2026-10-20T22:00:00Z", 20, 11),
])
def test_usage_no_contract_covers_is_counted_on_the_customers_days(october, billing_defs, instance, start_at, end_at,
                                                                   billed, unrated):
    """org_d sends one request a day at 12:00 UTC; CTR-D bills in Istanbul (UTC+3) from or until a
    local 01:00. Every request is billed or unrated, never both, never neither."""
    from billing_pipeline.steps.reconciliation import rollups_rated_once

    with transaction(october) as conn:
        conn.execute("UPDATE contracts SET timezone = 'Europe/Istanbul', start_at = %s, end_at = %s, "
                     "auto_renew = false WHERE contract_id = 'CTR-D'", (start_at, end_at))
    close_month(instance, Period.parse_month("2026-10"), definitions=billing_defs)
    with psycopg.connect(october) as conn:
        lines = conn.execute("SELECT description FROM invoice_lines WHERE invoice_id = 'CTR-D:2026-10:v1'").fetchall()
        unrated_d = conn.execute("SELECT requests FROM unrated_usage WHERE org_id = 'org_d'").fetchall()
        finding = rollups_rated_once(conn, Period.parse_month("2026-10"))
    assert lines == [(f"Polygon PoS - {billed} requests",)]
    assert unrated_d == [(unrated,)] and billed + unrated == 31
    assert finding.passed, finding.rows


def test_a_month_issued_keeps_its_prices_when_the_catalog_changes_later(october, billing_defs, instance, tmp_path):
    """Filler goes from 0.001 to 0.002 a request. Before October is issued, re-closing it applies the
    new price (a price fixed before issuing); once issued, a re-run (a dispute's) keeps the price it
    was issued with: it re-priced CTR-D's whole month at the new price, and the audit snapshot of
    October exported the new definition beside the old invoices."""
    from billing_pipeline.steps.audit import export_month
    from billing_pipeline.steps.rating import rate_month
    from month_fixture import TEST_PLANS

    october_period = Period.parse_month("2026-10")
    close_month(instance, october_period, definitions=billing_defs)
    dearer = {"filler": TEST_PLANS["filler"].model_copy(update={"charges": [
        MeteredCharge(meter="requests", unit="request", price=PerUnit(unit_price=D("0.002")))]})}

    def ctr_d_amount() -> Decimal:
        with psycopg.connect(october) as conn:
            return conn.execute("SELECT sum(amount) FROM rated_charges WHERE contract_id = 'CTR-D'").fetchone()[0]

    assert ctr_d_amount() == D("0.031")  # 31 requests at 0.001
    with transaction(october) as conn:
        sync_plans(conn, dearer)
    assert (ctr_d_amount(), rate_month(october, october_period).plans_kept_as_issued) == (D("0.031"), [])
    assert ctr_d_amount() == D("0.062")  # not issued yet: the new price applies

    with transaction(october) as conn:
        sync_plans(conn, {"filler": TEST_PLANS["filler"]})  # back to 0.001, then October is issued
    rate_month(october, october_period)
    with transaction(october) as conn:
        conn.execute("UPDATE invoices SET status = 'ISSUED' WHERE period_start = '2026-10-01'")
        sync_plans(conn, dearer)
    assert rate_month(october, october_period).plans_kept_as_issued == ["filler"]
    assert ctr_d_amount() == D("0.031")  # as issued
    plans_csv = export_month(october, october_period, tmp_path)["plans.csv"].read_text()
    assert '""unit_price"": ""0.001""' in plans_csv and "0.002" not in plans_csv


def test_the_first_billing_month_closes_for_a_customer_ahead_of_utc(db_url, usage_store, billing_defs, instance):
    """January 2025, the first billing month, with CTR-A billed in Istanbul (UTC+3): its local month
    starts at 21:00 UTC on 31 December 2024, a day no partition holds, and rating refused the month
    ('missing partition(s): 2024-12-31') though usage before the billing start is never billed."""
    from month_fixture import _row, october_events, seed_contracts, ts

    usage_store.insert_arrow("requests_raw", pa.Table.from_pylist([
        _row(ts(2024, 12, 31, 22), "before-start", "org_a", "prj_a1", "eth-mainnet"),  # 1 Jan in Istanbul
        *[_row(ts(2025, 1, 15, 12, 0, i), f"jan{i}", "org_a", "prj_a1", "eth-mainnet") for i in range(3)],
        _row(ts(2025, 1, 31, 22), "february", "org_a", "prj_a1", "eth-mainnet"),  # 1 Feb in Istanbul
    ], schema=october_events().schema))
    with transaction(db_url) as conn:
        seed_contracts(conn)
        conn.execute("UPDATE contracts SET start_at = '2024-12-31T21:00:00Z', timezone = 'Europe/Istanbul' "
                     "WHERE contract_id = 'CTR-A'")
        conn.execute("DELETE FROM contracts WHERE contract_id <> 'CTR-A'")
    closed = close_month(instance, Period.parse_month("2025-01"), {"allow_empty_days": True}, definitions=billing_defs)
    assert closed.failed_checks == ()
    with psycopg.connect(db_url) as conn:
        lines = conn.execute("""SELECT description, amount FROM invoice_lines
                                WHERE invoice_id = 'CTR-A:2025-01:v1' ORDER BY line_no""").fetchall()
        days = [r[0].isoformat() for r in conn.execute("SELECT day FROM usage_rollup_days ORDER BY day")]
    assert lines == [("ETH Mainnet - 3 requests", D("0.0500"))]  # 3 x 0.015 = 0.045, half-up
    assert (days[0], days[-1], len(days)) == ("2025-01-01", "2025-02-01", 32)  # no day before the billing start
