"""The Stripe sink in Dagster: fired once by its sensor for a complete month, never again after a
re-run upstream; its checks; the payment-events sensor."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import psycopg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from billing_pipeline.assets.stripe_invoices import stripe_invoices
from billing_pipeline.close import close_month
from billing_pipeline.definitions import defs as deployed_defs
from billing_pipeline.domain.periods import Period
from billing_pipeline.resources import BillingDatabase, StripeResource
from billing_pipeline.sensors.stripe_events import stripe_payment_events
from test_stripe_sink import rows
from product_defs import product_defs
from stripe_server import StripeServer

OCTOBER = Period.parse_month("2026-10")
SINK = stripe_invoices.key
NOV_5 = datetime(2026, 11, 5, 6, tzinfo=timezone.utc)
OCT_20 = datetime(2026, 10, 20, tzinfo=timezone.utc)  # the sensor was running before October ended


def defs_with(db_url, chdb_path, stripe: StripeResource) -> dg.Definitions:
    return product_defs(db_url, chdb_path, stripe=stripe)


def evaluate(defs, instance, cursor=None, at=NOV_5):
    return dg.evaluate_automation_conditions(defs, instance, evaluation_time=at, cursor=cursor,
                                             asset_selection=dg.AssetSelection.assets(SINK).without_checks())


def materialize_sink(defs, instance) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, asset_selection=[SINK], partition_key="2026-10-01")


def test_the_sink_fires_once_for_a_complete_month_never_after_a_rerun(october, billing_defs, instance):
    before = evaluate(billing_defs, instance, at=OCT_20)
    assert before.total_requested == 0  # October has not ended
    waiting = evaluate(billing_defs, instance, before.cursor)
    assert waiting.total_requested == 0  # October has ended but is not closed
    close_month(instance, OCTOBER, definitions=billing_defs)
    ready = evaluate(billing_defs, instance, waiting.cursor)
    assert ready.get_requested_partitions(SINK) == {"2026-10-01"}

    materialize_sink(billing_defs, instance)  # the run the sensor requested (dry run: no Stripe key)
    after = evaluate(billing_defs, instance, ready.cursor)
    assert after.total_requested == 0

    # a dispute re-runs two days and the month: drafts change, the sink is not fired again
    job = billing_defs.resolve_implicit_global_asset_job_def()
    job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("usage_rollups")],
                           tags={ASSET_PARTITION_RANGE_START_TAG: "2026-10-05",
                                 ASSET_PARTITION_RANGE_END_TAG: "2026-10-06"})
    job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("rated_charges"),
                                                               dg.AssetKey("invoice_drafts")],
                           partition_key="2026-10-01")
    assert evaluate(billing_defs, instance, after.cursor).total_requested == 0


def _materialized(instance, key: str, *partitions: str) -> None:
    for partition in partitions:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition))


def _check(instance, passed: bool, asset: str = "invoice_drafts", check: str = "drafts_add_up",
           partition: str = "2026-10-01") -> None:
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(asset), check_name=check, passed=passed,
        severity=dg.AssetCheckSeverity.ERROR, metadata={}, partition=partition))


def _rolled_up(instance, *days: str) -> None:
    """Days of usage_rollups materialized with their blocking check passed."""
    _materialized(instance, "usage_rollups", *days)
    for day in days:
        _check(instance, passed=True, asset="usage_rollups", check="rollups_match_clickhouse", partition=day)


def _month_upstream(instance, days) -> None:
    _rolled_up(instance, *days)
    _materialized(instance, "fx_snapshot", "2026-10-01")
    _check(instance, passed=True, asset="fx_snapshot", check="fx_rates_present")
    _materialized(instance, "rated_charges", "2026-10-01")
    _check(instance, passed=True, asset="rated_charges", check="rollups_rated_once")
    _materialized(instance, "invoice_drafts", "2026-10-01")
    _check(instance, passed=True, check="lira_lines_match_rate")


DAYS = [f"2026-10-{d:02d}" for d in range(1, 32)]


def test_a_missing_day_holds_the_sink(billing_defs, instance):
    """The condition alone, on recorded events: the month's drafts exist and passed their checks,
    but a day of usage is missing."""
    cursor = evaluate(billing_defs, instance, at=OCT_20).cursor
    _month_upstream(instance, [d for d in DAYS if d != "2026-10-17"])
    _check(instance, passed=True)
    held = evaluate(billing_defs, instance, cursor)
    assert held.total_requested == 0
    _rolled_up(instance, "2026-10-17")
    assert evaluate(billing_defs, instance, held.cursor).get_requested_partitions(SINK) == {"2026-10-01"}


def test_a_failed_blocking_check_on_the_drafts_holds_the_sink(billing_defs, instance):
    cursor = evaluate(billing_defs, instance, at=OCT_20).cursor
    _month_upstream(instance, DAYS)
    _check(instance, passed=False)
    assert evaluate(billing_defs, instance, cursor).total_requested == 0


def test_a_day_whose_rollups_disagree_with_clickhouse_holds_the_sink(billing_defs, instance):
    cursor = evaluate(billing_defs, instance, at=OCT_20).cursor
    _month_upstream(instance, [d for d in DAYS if d != "2026-10-05"])
    _materialized(instance, "usage_rollups", "2026-10-05")
    _check(instance, passed=False, asset="usage_rollups", check="rollups_match_clickhouse", partition="2026-10-05")
    _check(instance, passed=True)
    # (the same events with the check passed request the month: a runless event per check and partition only)
    assert evaluate(billing_defs, instance, cursor).total_requested == 0


def test_the_sink_issues_live_and_a_stopped_invoice_turns_its_check_red(october, db_url, chdb_path, instance):
    with StripeServer() as server:
        server.stripe.inject("/v1/invoices", "402", method="POST")  # the first invoice (org_a) is refused
        defs = defs_with(db_url, chdb_path, StripeResource(api_key="sk_test_local", api_base=server.url,
                                                           max_ops_per_second=200, concurrency=1))
        close_month(instance, OCTOBER, definitions=defs)
        result = materialize_sink(defs, instance)
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert checks["all_invoices_issued"].passed is False
        assert checks["all_invoices_issued"].metadata["stopped"].value == 1
        assert checks["stripe_totals_match"].passed is True
        meta = result.asset_materializations_for_node("stripe_invoices")[0].metadata
        assert (meta["issued"].value, meta["failed"].value, meta["stripe_429"].value) == (2, 1, 0)
        # October's hand-made totals: CTR-C 500.75 EUR, CTR-D 0.03 USD went out; CTR-B is Turkish (Parasut)
        assert sorted((i["metadata"]["invoice_id"], i["total"], i["currency"])
                      for i in server.stripe.state.invoices.values() if i["status"] == "open") == [
            ("CTR-C:2026-10:v1", 50075, "eur"), ("CTR-D:2026-10:v1", 3, "usd")]
        assert rows(db_url, "SELECT invoice_id, status FROM invoices WHERE sink_error IS NOT NULL") == [
            ("CTR-A:2026-10:v1", "DRAFT")]

        # the reason fixed (here: Stripe accepts again), a re-run from the UI issues the rest only
        rerun = materialize_sink(defs, instance)
        assert {c.check_name: c.passed for c in rerun.get_asset_check_evaluations()} == {
            "all_invoices_issued": True, "stripe_totals_match": True, "outbox_not_stuck": True,
            "stripe_invoices_unchanged": True}
        assert rerun.asset_materializations_for_node("stripe_invoices")[0].metadata["issued"].value == 1

        # a difference between Stripe's figures and ours turns the reconciliation red
        with __import__("psycopg").connect(db_url, autocommit=True) as conn:
            conn.execute("UPDATE invoices SET external_subtotal = external_subtotal + 0.01 "
                         "WHERE invoice_id = 'CTR-D:2026-10:v1'")
        red = materialize_sink(defs, instance)
        totals = next(c for c in red.get_asset_check_evaluations() if c.check_name == "stripe_totals_match")
        assert totals.passed is False and totals.metadata["differing"].value == 1

        # payments come back through the events sensor
        server.stripe.handle("POST", f"/v1/invoices/{server.stripe.invoices_for('CTR-D:2026-10:v1')[0]['id']}/pay",
                             {"paid_out_of_band": "true"}, None, "sk")
        with dg.build_sensor_context(instance=instance, resources={
                "stripe": StripeResource(api_key="sk_test_local", api_base=server.url),
                "billing_db": BillingDatabase(url=db_url)}) as context:
            skip = stripe_payment_events(context)
            assert "1 paid" in skip.skip_message and context.cursor == server.stripe.state.events[-1]["id"]
    assert rows(db_url, "SELECT status FROM invoices WHERE invoice_id = 'CTR-D:2026-10:v1'") == [("PAID",)]


def test_a_stray_item_on_the_stripe_draft_stops_finalization(october, db_url, chdb_path, instance):
    with StripeServer() as server:
        server.stripe.stray_item_cents = 999
        defs = defs_with(db_url, chdb_path, StripeResource(api_key="sk_test_local", api_base=server.url,
                                                           max_ops_per_second=200))
        close_month(instance, OCTOBER, definitions=defs)
        result = materialize_sink(defs, instance)
        assert [i["status"] for i in server.stripe.state.invoices.values()] == ["draft"] * 3
    reasons = rows(db_url, "SELECT sink_error FROM invoices WHERE invoice_id = 'CTR-D:2026-10:v1'")[0][0]
    assert "has subtotal 1002 usd, ours is 3 usd (minor units); not finalized" in reasons
    assert next(c for c in result.get_asset_check_evaluations() if c.check_name == "all_invoices_issued").passed is False


def test_sink_sensors_start_running_and_target_only_the_sinks():
    sensors = {s.name: s for s in deployed_defs.sensors}
    assert sensors["invoice_sinks"].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors["stripe_payment_events"].default_status == dg.DefaultSensorStatus.RUNNING
    graph = deployed_defs.resolve_asset_graph()
    assert sensors["invoice_sinks"].asset_selection.resolve(graph) == {SINK, dg.AssetKey("parasut_invoices")}
    assert SINK not in sensors["billing_automation"].asset_selection.resolve(graph)


@pytest.mark.parametrize("key,expected", [("sk_test_x", 25), ("sk_live_x", 100)])
def test_the_rate_limit_defaults_to_stripes_for_the_key(key, expected):
    assert StripeResource(api_key=key).gateway().ops_per_second == expected
    assert StripeResource(api_key=key, max_ops_per_second=7).gateway().ops_per_second == 7
    assert StripeResource().gateway() is None and StripeResource(api_key=key, dry_run=True).gateway() is None


def test_the_sink_sends_nothing_when_the_months_blocking_checks_fail_now(october, billing_defs, instance):
    """A draft edited after drafting, its lines and totals together (so they still add up): the
    checks' last results were green and Dagster keeps one result per check, not per month, so the
    sink would have issued it. It asks the database again first, and stops before any call."""
    close_month(instance, OCTOBER, definitions=billing_defs)
    with psycopg.connect(october) as conn:
        conn.execute("UPDATE invoice_lines SET amount = amount + 1 WHERE invoice_id = 'CTR-A:2026-10:v1' AND line_no = 1")
        conn.execute("UPDATE invoices SET subtotal = subtotal + 1, total = total + 1 "
                     "WHERE invoice_id = 'CTR-A:2026-10:v1'")
    with pytest.raises(dg.Failure) as failure:
        materialize_sink(billing_defs, instance)
    assert str(failure.value).startswith(
        "stripe_invoices 2026-10: nothing sent: the month's blocking checks fail now (1): CTR-A:2026-10:v1: line 1 "
        "is 1.0500, its rated charge CTR-A:2026-10:USAGE:requests:bsc-mainnet rounds to 0.05.")
    assert rows(october, "SELECT count(*) FROM sink_outbox") == [(0,)]  # not even a dry-run request


@pytest.mark.parametrize("change,problem", [
    # usage or terms changed since rating (a day re-run in the UI, a contract edited): the drafts bill
    # what no longer holds; drafting refused this state, the sinks sent it (500 GB went unbilled)
    ("UPDATE contracts SET minimum_commitment = 70 WHERE contract_id = 'CTR-A'",
     "rated_charges: contract CTR-A changed (contracts) after rated_charges 2026-10-01; re-materialize rated_charges "
     "2026-10-01 first"),
    ("UPDATE usage_rollup_days SET rolled_up_at = now() WHERE day = '2026-10-05'",
     "rated_charges: usage_rollups partition 2026-10-05 was re-run after rated_charges 2026-10-01"),
    # prepaid credit no grant backs, total lowered to match: it added up, and Stripe got a customer credit
    ("UPDATE invoices SET credits_applied = 0.16, total = 0 WHERE invoice_id = 'CTR-A:2026-10:v1'",
     "CTR-A:2026-10:v1: prepaid credit 0.1600 applied, but the contract has 0 left"),
], ids=["contract changed", "usage re-run", "unbacked credit"])
def test_the_sink_refuses_stale_charges_and_unbacked_credit(october, billing_defs, instance, change, problem):
    close_month(instance, OCTOBER, definitions=billing_defs)
    with psycopg.connect(october) as conn:
        conn.execute(change)
    with pytest.raises(dg.Failure) as failure:
        materialize_sink(billing_defs, instance)
    assert problem in str(failure.value)
    assert rows(october, "SELECT count(*) FROM sink_outbox") == [(0,)]
