"""Close a hand-made month through Dagster on the real PostgreSQL and chdb; exact amounts."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import dagster as dg
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from billing_pipeline.close import RunFailedError, close_month
from billing_pipeline.domain.periods import Period
from billing_pipeline.stores.postgres import transaction
from month_fixture import october_events, seed_contracts

OCTOBER = Period.parse_month("2026-10")


def _invoices(url):
    with psycopg.connect(url) as conn:
        invoices = {r[0]: r[1:] for r in conn.execute(
            "SELECT invoice_id, status, currency, subtotal, tax, total, contract_doc_sha256 FROM invoices ORDER BY 1")}
        lines = {}
        for invoice_id, line_no, description, quantity, unit_price, amount in conn.execute(
                "SELECT invoice_id, line_no, description, quantity, unit_price, amount FROM invoice_lines ORDER BY 1, 2"):
            lines.setdefault(invoice_id, []).append((line_no, description, quantity, unit_price, amount))
    return invoices, lines


def test_month_close_exact_amounts(october, billing_defs, instance):
    close_month(instance, OCTOBER, definitions=billing_defs)
    invoices, lines = _invoices(october)

    assert invoices == {
        "CTR-A:2026-10:v1": ("DRAFT", "USD", Decimal("0.16"), Decimal("0"), Decimal("0.16"), None),
        "CTR-B:2026-10:v1": ("DRAFT", "TRY", Decimal("25000"), Decimal("5000"), Decimal("30000"), "ab" * 32),
        "CTR-C:2026-10:v1": ("DRAFT", "EUR", Decimal("500.75"), Decimal("0"), Decimal("500.75"), "cd" * 32),
        "CTR-D:2026-10:v1": ("DRAFT", "USD", Decimal("0.03"), Decimal("0"), Decimal("0.03"), None),
    }
    # Each line rounded once, half-up: 3 x 0.015 = 0.045 -> 0.05 and 7 x 0.015 = 0.105 -> 0.11, so the
    # total is 0.16 although the unrounded sum 0.150 would round to 0.15.
    assert lines["CTR-A:2026-10:v1"] == [
        (1, "BSC Mainnet - 3 requests", Decimal("3"), Decimal("0.015"), Decimal("0.05")),
        (2, "ETH Mainnet - 7 requests", Decimal("7"), Decimal("0.015"), Decimal("0.11")),
    ]
    assert lines["CTR-B:2026-10:v1"] == [
        (1, "Monthly RPC service - Enterprise TR (2026-10)", Decimal("1"), Decimal("25000"), Decimal("25000")),
        (2, "ETH Mainnet - 2 requests (included)", Decimal("2"), Decimal("0"), Decimal("0")),
    ]
    assert lines["CTR-C:2026-10:v1"] == [
        (1, "Monthly base fee - Growth EU (2026-10)", Decimal("1"), Decimal("500"), Decimal("500")),
        (2, "Base Mainnet - 5 requests (included)", Decimal("5"), Decimal("0"), Decimal("0")),
        (3, "ETH Mainnet - 8 requests (included)", Decimal("8"), Decimal("0"), Decimal("0")),
        (4, "Overage - 3 requests beyond 10 included", Decimal("3"), Decimal("0.25"), Decimal("0.75")),
    ]
    assert lines["CTR-D:2026-10:v1"] == [
        (1, "Polygon PoS - 31 requests", Decimal("31"), Decimal("0.001"), Decimal("0.03")),
    ]

    with psycopg.connect(october) as conn:
        days = conn.execute("""SELECT count(*), sum(raw_rows), sum(duplicate_rows), sum(quarantined_rows),
                                      sum(requests) FROM usage_rollup_days
                               WHERE day BETWEEN '2026-10-01' AND '2026-10-31'""").fetchone()
        assert days == (31, 65, 3, 2, 60)
        # the close also rolled up the edge days 30 September and 1 November
        assert conn.execute("SELECT min(day), max(day) FROM usage_rollup_days").fetchone() == (
            date(2026, 9, 30), date(2026, 11, 1))
        assert conn.execute("SELECT day, reason, org_id, chain, raw_rows FROM quarantined_usage ORDER BY day").fetchall() == [
            (date(2026, 10, 8), "missing_org_id", "", "eth-mainnet", 1),
            (date(2026, 10, 9), "unknown_chain", "org_a", "dogecoin-mainnet", 1)]
        assert conn.execute("SELECT org_id, chain, requests FROM unrated_usage").fetchall() == [
            ("org_x", "eth-mainnet", 4)]
        # b5 was first delivered in September: its October copy is a duplicate, not an October request.
        assert conn.execute("SELECT requests, duplicate_rows FROM usage_rollup_days WHERE day = '2026-10-01'"
                            ).fetchone() == (1, 1)
        assert conn.execute("""SELECT requests, successful_requests, error_requests FROM usage_rollups
                               WHERE project_id = 'prj_a1'""").fetchone() == (7, 6, 1)

    # What the data team sees in the UI: readable metadata on each asset.
    rollup_meta = instance.get_latest_materialization_event(dg.AssetKey("usage_rollups")).asset_materialization.metadata
    # a1, a2 and b5 in October, and b1's copy delivered on 1 November (an edge day of the close)
    assert rollup_meta["duplicate_rows_removed"].value == 4
    invoice_meta = instance.get_latest_materialization_event(dg.AssetKey("invoice_drafts")).asset_materialization.metadata
    assert invoice_meta["total"].value == "500.75 EUR, 30,000.00 TRY, 0.19 USD"
    assert (invoice_meta["dagster/row_count"].value, invoice_meta["drafted_this_run"].value) == (4, 4)
    # most of the month issued, drafting run again: the month still shows whole (it showed 1 draft, 0.05 USD)
    with transaction(october) as conn:
        conn.execute("UPDATE invoices SET status = 'ISSUED' WHERE contract_id <> 'CTR-D'")
    job = billing_defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("invoice_drafts")],
                                  partition_key="2026-10-01").success
    again = instance.get_latest_materialization_event(dg.AssetKey("invoice_drafts")).asset_materialization.metadata
    assert (again["dagster/row_count"].value, again["total"].value, again["drafted_this_run"].value) == (
        4, "500.75 EUR, 30,000.00 TRY, 0.19 USD", 1)
    rated_meta = instance.get_latest_materialization_event(dg.AssetKey("rated_charges")).asset_materialization.metadata
    assert rated_meta["unrated_requests"].value == 4
    assert rated_meta["unrated_orgs"].value == "org_x"


def _snapshot(url):
    queries = {
        "usage_rollups": "SELECT * FROM usage_rollups ORDER BY day, org_id, project_id, chain",
        "usage_rollup_days": """SELECT day, raw_rows, duplicate_rows, quarantined_rows, requests, bytes_out,
                                       source_engine, source_query_sha256 FROM usage_rollup_days ORDER BY day""",
        "rated_charges": """SELECT period_start, charge_id, contract_id, position, kind, chain, meter, description,
                                   quantity, unit_price, amount, currency, details FROM rated_charges ORDER BY 2""",
        "invoices": """SELECT invoice_id, contract_id, version, status, currency, subtotal, tax, total
                       FROM invoices ORDER BY 1""",
        "invoice_lines": "SELECT * FROM invoice_lines ORDER BY invoice_id, line_no",
        "unrated_usage": "SELECT * FROM unrated_usage ORDER BY org_id, chain",
    }
    with psycopg.connect(url) as conn:
        return {name: conn.execute(q).fetchall() for name, q in queries.items()}


def test_rerunning_partitions_changes_nothing(october, billing_defs, instance):
    close_month(instance, OCTOBER, definitions=billing_defs)
    before = _snapshot(october)
    job = billing_defs.resolve_implicit_global_asset_job_def()
    # a single day, a range of days, then the month again
    assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("usage_rollups")],
                                  partition_key="2026-10-05").success
    assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("usage_rollups")],
                                  tags={ASSET_PARTITION_RANGE_START_TAG: "2026-10-09",
                                        ASSET_PARTITION_RANGE_END_TAG: "2026-10-11"}).success
    close_month(instance, OCTOBER, definitions=billing_defs)
    assert _snapshot(october) == before
    assert len(before["usage_rollups"]) == 40 and len(before["invoice_lines"]) == 9


def test_a_draft_write_that_fails_leaves_the_months_drafts_as_they_were(october, billing_defs, instance):
    # drafts are written by a thread while the next batch is drafted: its failure must still stop
    # the step with the database's own words, and roll the whole month's drafting back
    close_month(instance, OCTOBER, definitions=billing_defs)
    before = _snapshot(october)
    with transaction(october) as conn:
        conn.execute("""CREATE FUNCTION refuse_ctr_b() RETURNS trigger LANGUAGE plpgsql AS $$
                        BEGIN RAISE EXCEPTION 'no lines for %', NEW.invoice_id; END $$""")
        conn.execute("""CREATE TRIGGER refuse_ctr_b BEFORE INSERT ON invoice_lines FOR EACH ROW
                        WHEN (NEW.invoice_id LIKE 'CTR-B:%') EXECUTE FUNCTION refuse_ctr_b()""")
    job = billing_defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("invoice_drafts")],
                                    partition_key="2026-10-01", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "RaiseException: no lines for CTR-B:2026-10:v1" in failure.step_failure_data.error.to_string()
    assert _snapshot(october) == before


@pytest.mark.parametrize("day", ["2026-10-05", "2026-11-01"])  # a day of the month, or the edge day after it
def test_invoicing_refuses_charges_older_than_their_usage(october, billing_defs, instance, day):
    """The edge days too: rating reads them for customers in other timezones, and a re-run
    1 November left October's drafts made from stale charges without a word."""
    close_month(instance, OCTOBER, definitions=billing_defs)
    job = billing_defs.resolve_implicit_global_asset_job_def()
    job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("usage_rollups")],
                           partition_key=day)
    result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("invoice_drafts")],
                                    partition_key="2026-10-01", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert f"usage_rollups partition {day} was re-run after rated_charges 2026-10-01" in \
        failure.step_failure_data.error.message


def test_missing_days_in_clickhouse_name_the_partition(db_url, usage_store, billing_defs, instance):
    events = october_events()
    days = pc.cast(events.column("timestamp"), pa.date32())
    usage_store.insert_arrow("requests_raw", events.filter(pc.not_equal(days, pa.scalar(date(2026, 10, 14)))))
    with transaction(db_url) as conn:
        seed_contracts(conn)
    with pytest.raises(RunFailedError) as err:
        close_month(instance, OCTOBER, definitions=billing_defs)
    message = str(err.value)
    assert "requests_raw has no rows for 1 day(s): 2026-10-14 (usage_rollups partition(s) 2026-10-14)" in message
    assert "Traceback" not in message


def test_rating_refuses_a_month_with_days_not_rolled_up(october, billing_defs, instance):
    job = billing_defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("usage_rollups")],
                                  tags={ASSET_PARTITION_RANGE_START_TAG: "2026-10-01",
                                        ASSET_PARTITION_RANGE_END_TAG: "2026-10-29"}).success
    result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("rated_charges")],
                                    partition_key="2026-10-01", raise_on_error=False)
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert ("rated_charges 2026-10-01 needs every day of 2026-10 in usage_rollups; missing partition(s): "
            "2026-10-30, 2026-10-31") in failure.step_failure_data.error.message


def test_quarantine_and_unrated_usage_turn_checks_red(october, billing_defs, instance):
    close_month(instance, OCTOBER, definitions=billing_defs)

    def check(asset, name):
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey(asset), name)])[dg.AssetCheckKey(dg.AssetKey(asset), name)]
        evaluation = record.event.dagster_event.event_specific_data
        return evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}

    assert check("usage_rollups", "no_quarantined_rows")[0] is False
    assert check("usage_rollups", "no_quarantined_rows")[1]["quarantined_rows"] == 2
    assert check("usage_rollups", "rollups_match_clickhouse")[0] is True  # 33 days, 3 meters each
    assert check("rated_charges", "all_usage_rated") == (False, {"unrated_requests": 4, "orgs": "org_x"})
    assert check("rated_charges", "usage_within_soft_caps")[0] is True
    assert check("rated_charges", "usage_within_hard_caps")[0] is True


def test_drafts_add_up_only_when_every_line_is_its_rated_charge_rounded_once(october, billing_defs, instance):
    """The blocking drafts_add_up check compared each draft with itself (lines, subtotal, tax,
    total); a line that no longer matched its rated charge, or a charge on no line, passed as long
    as the draft's own sums agreed. Now each contract's current version is matched to the month's
    rated charges, one line per charge, rounded once."""
    from billing_pipeline.steps.invoicing import draft_problems

    close_month(instance, OCTOBER, definitions=billing_defs)
    assert draft_problems(october, OCTOBER) == []
    with psycopg.connect(october) as conn:
        # CTR-A line 1 (bsc: 0.045 -> 0.05) moved to 0.06, and CTR-D's only line dropped, each draft
        # kept adding up on its own
        conn.execute("UPDATE invoice_lines SET amount = 0.06 WHERE invoice_id = 'CTR-A:2026-10:v1' AND line_no = 1")
        conn.execute("""UPDATE invoices SET subtotal = subtotal + 0.01, total = total + 0.01
                        WHERE invoice_id = 'CTR-A:2026-10:v1'""")
        charge = conn.execute("SELECT charge_id FROM invoice_lines WHERE invoice_id = 'CTR-D:2026-10:v1'").fetchone()[0]
        conn.execute("DELETE FROM invoice_lines WHERE invoice_id = 'CTR-D:2026-10:v1'")
        conn.execute("UPDATE invoices SET subtotal = 0, total = 0 WHERE invoice_id = 'CTR-D:2026-10:v1'")
        a_charge = conn.execute("SELECT charge_id FROM invoice_lines WHERE invoice_id = 'CTR-A:2026-10:v1' "
                                "AND line_no = 1").fetchone()[0]
    assert draft_problems(october, OCTOBER) == [
        ("CTR-A:2026-10:v1", f"line 1 is 0.0600, its rated charge {a_charge} rounds to 0.05"),
        ("CTR-D:2026-10:v1", f"rated charge {charge} is on no line")]


def test_a_contract_whose_billing_cycle_contradicts_its_plan_is_named(october):
    """contracts.billing_cycle was never read: the demo's yearly contract said MONTHLY (and the audit
    snapshot showed it) while its plan billed it yearly. Rating now refuses the contradiction."""
    from billing_pipeline.errors import BillingError
    from billing_pipeline.steps.rating import load_terms

    with psycopg.connect(october) as conn:
        conn.execute("UPDATE contracts SET billing_cycle = 'YEARLY' WHERE contract_id = 'CTR-A'")
        with pytest.raises(BillingError, match="contract CTR-A says billing_cycle YEARLY but its plan pro_test is "
                                               "billed MONTHLY; make them agree"):
            load_terms(conn, OCTOBER)


def test_a_month_that_needs_the_day_after_it_is_rated_again_once_that_day_is_in(october, billing_defs, instance):
    """CTR-A bills in New York, so October needs 1 November's rollup (rolled up at 02:00 on the 2nd).
    The automation rated October at 02:00 on the 1st, that run failed naming the day, and nothing
    asked again: the month never closed by itself."""
    from datetime import datetime, timezone

    with transaction(october) as conn:
        conn.execute("UPDATE contracts SET timezone = 'America/New_York' WHERE contract_id = 'CTR-A'")
    job = billing_defs.resolve_implicit_global_asset_job_def()
    rated = dg.AssetKey("rated_charges")

    def roll_up(first: str, last: str) -> None:
        assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("usage_rollups")], tags={
            ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}).success

    def requested(at: datetime, cursor):
        result = dg.evaluate_automation_conditions(defs=billing_defs, instance=instance, cursor=cursor,
                                                   evaluation_time=at)
        return result.get_requested_partitions(rated), result.cursor

    _, cursor = requested(datetime(2026, 11, 1, 1, 0, tzinfo=timezone.utc), None)  # the sensor was running
    roll_up("2026-09-30", "2026-10-31")
    first, cursor = requested(datetime(2026, 11, 1, 2, 10, tzinfo=timezone.utc), cursor)
    assert first == {"2026-10-01"}
    failed = job.execute_in_process(instance=instance, asset_selection=[rated], partition_key="2026-10-01",
                                    raise_on_error=False)
    assert not failed.success  # missing partition(s): 2026-11-01
    waiting, cursor = requested(datetime(2026, 11, 1, 2, 15, tzinfo=timezone.utc), cursor)  # the sensor's next tick
    assert waiting == set()
    roll_up("2026-11-01", "2026-11-01")  # 02:00 on the 2nd
    again, cursor = requested(datetime(2026, 11, 2, 2, 35, tzinfo=timezone.utc), cursor)
    assert again == {"2026-10-01"}
    assert job.execute_in_process(instance=instance, asset_selection=[rated], partition_key="2026-10-01").success
    later, _ = requested(datetime(2026, 11, 2, 3, 0, tzinfo=timezone.utc), cursor)
    assert later == set()  # once


@pytest.mark.parametrize("change", [
    "UPDATE contracts SET vat_rate = 0.10 WHERE contract_id = 'CTR-B'",
    """INSERT INTO contract_discounts (contract_id, discount_id, kind, value, valid_from, description)
       VALUES ('CTR-C', 'D10', 'PERCENT', 10, '2026-10-01', 'Ten percent')""",
])
def test_drafting_refuses_charges_rated_before_a_contract_changed(october, billing_defs, instance, change):
    """Drafts made after a contract changed from charges rated before it mixed its old and new
    terms (the old discount with the new VAT rate), with every check green."""
    close_month(instance, OCTOBER, definitions=billing_defs)
    with transaction(october) as conn:
        conn.execute(change)
    job = billing_defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("invoice_drafts")],
                                    partition_key="2026-10-01", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "after rated_charges 2026-10-01; re-materialize rated_charges 2026-10-01 first" in \
        failure.step_failure_data.error.message
    close_month(instance, OCTOBER, definitions=billing_defs)  # rated again, then drafted: fine
