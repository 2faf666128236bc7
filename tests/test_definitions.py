"""The Dagster project loads as the UI would load it, with the lineage the design asks for."""

from __future__ import annotations

import dagster as dg
import psycopg
import pytest
import yaml

from billing_pipeline.definitions import defs
from billing_pipeline.stores.postgres import MigrationError, load_migrations, migrate


def test_definitions_load_with_lineage():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    parents = {key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
               for key in graph.get_all_asset_keys()}
    assert parents["usage_rollups"] == {"requests_raw"}
    assert parents["rated_charges"] == {"usage_rollups", "contracts"}
    assert parents["invoice_drafts"] == {"rated_charges", "fx_snapshot"}
    assert parents["stripe_invoices"] == {"invoice_drafts"}
    assert parents["invoice_corrections"] == {"invoice_drafts", "stripe_invoices", "parasut_invoices"}
    assert parents["audit_snapshot"] == {"invoice_drafts", "invoice_corrections"}  # a dispute's snapshot holds them
    assert graph.get(dg.AssetKey("invoice_corrections")).automation_condition is None  # deliberate, never a sensor
    rollups = graph.get(dg.AssetKey("usage_rollups"))
    assert isinstance(rollups.partitions_def, dg.DailyPartitionsDefinition)
    assert rollups.partitions_def.timezone == "UTC"
    assert rollups.backfill_policy == dg.BackfillPolicy.single_run()
    assert isinstance(graph.get(dg.AssetKey("invoice_drafts")).partitions_def, dg.MonthlyPartitionsDefinition)
    sensor = defs.resolve_sensor_def("billing_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_a_backfill_of_days_with_downstream_reaches_the_corrections_then_the_snapshot():
    """The dispute backfill from the UI: disputed usage_rollups days "and downstream" must take in
    the month's rating, drafts, sinks, corrections and snapshot, corrections before the snapshot."""
    graph = defs.resolve_asset_graph()
    downstream = dg.AssetSelection.assets("usage_rollups").downstream().resolve(graph)
    billing = {k.to_user_string() for k in downstream if graph.get(k).group_name != "analytics"}
    assert billing == {"usage_rollups", "rated_charges", "invoice_drafts", "stripe_invoices", "parasut_invoices",
                       "invoice_corrections", "audit_snapshot", "ledger"}  # ledger: an AssetSpec the sinks append to
    assert dg.AssetKey(["marts", "revenue_per_chain"]) in downstream  # and the analyst marts after them
    order = [k.to_user_string() for level in graph.toposorted_asset_keys_by_level for k in level]
    assert order.index("stripe_invoices") < order.index("invoice_corrections") < order.index("audit_snapshot")
    mapped = graph.get_children_partitions(dg.AssetKey("usage_rollups"), "2026-10-05")
    assert {(p.asset_key.to_user_string(), p.partition_key) for p in mapped} == {
        ("rated_charges", "2026-10-01"), ("staging/stg_usage_rollups", None)}  # a view: unpartitioned


def test_workspace_points_at_the_definitions_module():
    with open("workspace.yaml") as f:
        workspace = yaml.safe_load(f)
    assert workspace["load_from"][0]["python_module"]["module_name"] == "billing_pipeline.definitions"


def test_migrations_are_ordered_idempotent_and_tamper_evident(empty_db_url):
    versions = [m.version for m in load_migrations()]
    assert versions == sorted(versions) and versions[0] == 1
    assert migrate(empty_db_url) == versions
    assert migrate(empty_db_url) == []
    with psycopg.connect(empty_db_url) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
        assert {"plans", "contracts", "usage_rollups", "rated_charges", "fx_rates", "invoices", "invoice_lines",
                "ledger", "sink_outbox", "schema_migrations"} <= tables
        contract_columns = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'contracts'")}
        assert {"contract_type", "plan_id", "org_id", "currency", "region", "start_at", "end_at", "price_fixed",
                "billing_cycle", "signed_doc_url", "signed_doc_sha256", "auto_renew"} <= contract_columns
        invoice_columns = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'invoices'")}
        assert {"period_start", "period_end", "version", "status", "subtotal", "tax", "total", "currency",
                "fx_snapshot_ref", "pdf_url"} <= invoice_columns
        conn.execute("UPDATE schema_migrations SET sha256 = repeat('0', 64) WHERE version = 1")
        conn.commit()
    with pytest.raises(MigrationError, match="migration 0001_initial.sql changed after it was applied"):
        migrate(empty_db_url)


def test_yesterday_is_rolled_up_at_two_by_itself():
    """requests_raw is written by the gateway, never materialized in Dagster: on_cron waited for it
    to update since the tick, and no day was ever rolled up by the automation."""
    from datetime import datetime, timezone

    with dg.DagsterInstance.ephemeral() as instance:
        cursor = None
        for hour, minute in ((1, 55), (2, 5)):  # before and after the tick on 4 December
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor,
                                                       evaluation_time=datetime(2026, 12, 4, hour, minute,
                                                                                tzinfo=timezone.utc))
            cursor = result.cursor
        assert sorted(result.get_requested_partitions(dg.AssetKey("usage_rollups"))) == ["2026-12-03"]


def test_month_is_rated_again_when_a_day_is_rerun():
    """The automation sensor's logic: the month follows once every day is in, and again after a re-run."""
    from datetime import datetime, timezone

    evaluation_time = datetime(2026, 11, 2, 6, tzinfo=timezone.utc)
    with dg.DagsterInstance.ephemeral() as instance:
        def report(asset, *partitions):
            for p in partitions:
                instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=p))

        def requested():
            nonlocal cursor
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor,
                                                       evaluation_time=evaluation_time)
            cursor = result.cursor
            return {key.to_user_string(): sorted(result.get_requested_partitions(key))
                    for key in (dg.AssetKey("rated_charges"), dg.AssetKey("invoice_drafts"))
                    if result.get_requested_partitions(key)}

        cursor = None
        requested()
        report("usage_rollups", *[f"2026-10-{d:02d}" for d in range(1, 31)])
        assert requested() == {}  # October 31 is still missing
        report("fx_snapshot", "2026-10-01")
        report("usage_rollups", "2026-10-31")
        # rating and drafting are requested together, so they run as one run in order
        both = {"rated_charges": ["2026-10-01"], "invoice_drafts": ["2026-10-01"]}
        assert requested() == both
        report("rated_charges", "2026-10-01")
        report("invoice_drafts", "2026-10-01")
        assert requested() == {}
        report("usage_rollups", "2026-10-05")  # a disputed day re-run
        assert requested() == both


def test_a_day_whose_rollup_failed_is_asked_again_every_hour(billing_defs):
    """on_cron asked for 3 December once, at 02:00; the run failed (no rows: ingestion late) and
    nothing asked again, so the month waited on a red partition until someone noticed."""
    from datetime import datetime, timezone

    job = billing_defs.resolve_implicit_global_asset_job_def()
    rollups = dg.AssetKey("usage_rollups")
    with dg.DagsterInstance.ephemeral() as instance:
        cursor = None

        def requested(hour: int, minute: int, day: int = 4) -> list[str]:
            nonlocal cursor
            result = dg.evaluate_automation_conditions(
                defs=billing_defs, instance=instance, cursor=cursor,
                evaluation_time=datetime(2026, 12, day, hour, minute, tzinfo=timezone.utc))
            cursor = result.cursor
            return sorted(result.get_requested_partitions(rollups))

        assert requested(1, 55) == []
        assert requested(2, 5) == ["2026-12-03"]
        failed = job.execute_in_process(instance=instance, asset_selection=[rollups], partition_key="2026-12-03",
                                        raise_on_error=False)
        assert not failed.success  # requests_raw has no rows for 2026-12-03
        assert requested(2, 30) == []  # at most once an hour
        assert requested(3, 5) == ["2026-12-03"]
        assert requested(3, 30) == []
        assert requested(4, 5) == ["2026-12-03"]  # the 03:05 request not run here: still failed, asked again
        job.execute_in_process(instance=instance, asset_selection=[rollups], partition_key="2026-12-03",
                               run_config={"ops": {"usage_rollups": {"config": {"allow_empty_days": True}}}})
        assert requested(5, 5) == []  # rolled up: no more
