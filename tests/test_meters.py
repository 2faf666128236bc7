"""Meters: the reviewable catalog, its validation, and every meter computed in the rollups."""

from __future__ import annotations

import textwrap

import psycopg
import pytest

from billing_pipeline.domain.meters import MeterFileError, load_compute_units, load_meters
from billing_pipeline.steps.usage import roll_up_usage
from month_fixture import OCT_END, OCT_START


def test_catalog_declares_the_required_meters():
    meters = {m.slug: m for m in load_meters()}
    assert set(meters) == {"requests", "successful_requests", "egress_bytes", "compute_units"}
    assert (meters["successful_requests"].event_type, meters["successful_requests"].aggregation) == \
        ("rpc_request.success", "COUNT")
    assert (meters["egress_bytes"].aggregation, meters["egress_bytes"].value_property) == ("SUM", "$.bytes_out")
    weights = load_compute_units()
    assert weights.methods["eth_getLogs"] > weights.methods["eth_blockNumber"]


def _meter_file(tmp_path, body: str):
    path = tmp_path / "meters.yaml"
    path.write_text(textwrap.dedent(body))
    return path


BASE = """\
meters:
  - slug: requests
    eventType: rpc_request
    aggregation: COUNT
    groupBy: {chain: $.chain}
"""


@pytest.mark.parametrize("extra, message", [
    ("  - slug: egress\n    eventType: rpc_request\n    aggregation: SUM\n    groupBy: {chain: $.chain}\n",
     "meters.yaml: meter 'egress': valueProperty: required for aggregation SUM"),
    ("  - slug: egress\n    eventType: rpc_request\n    aggregation: AVERAGE\n    valueProperty: $.bytes_out\n"
     "    groupBy: {chain: $.chain}\n",
     "meters.yaml: meter 'egress', aggregation: Input should be 'SUM', 'COUNT', 'MAX', 'UNIQUE_COUNT' or 'LATEST'"),
    ("  - slug: egress\n    eventType: rpc_request\n    aggregation: SUM\n    valueProperty: $.bytesout\n"
     "    groupBy: {chain: $.chain}\n",
     "meters.yaml: meter 'egress': valueProperty: '$.bytesout' is not a numeric property of the events"),
    ("  - slug: calls\n    eventType: rpc_call\n    aggregation: COUNT\n    groupBy: {chain: $.chain}\n",
     "meters.yaml: meter 'calls', eventType: unknown event type 'rpc_call'"),
    ("  - slug: calls\n    eventType: rpc_request\n    aggregation: COUNT\n    groupBy: {method: $.method}\n",
     "meters.yaml: meter 'calls', groupBy: must be {chain: $.chain}"),
    ("  - slug: calls\n    eventType: rpc_request\n    aggregation: COUNT\n    valueProperty: $.bytes_out\n"
     "    groupBy: {chain: $.chain}\n",
     "meters.yaml: meter 'calls': valueProperty: COUNT counts events and takes no valueProperty"),
    ("  - slug: Calls-Total\n    eventType: rpc_request\n    aggregation: COUNT\n    groupBy: {chain: $.chain}\n",
     "meters.yaml: meter 'Calls-Total', slug: String should match pattern"),
    ("  - slug: requests\n    eventType: rpc_request\n    aggregation: COUNT\n    groupBy: {chain: $.chain}\n",
     "meters.yaml: meters: slug 'requests' is declared twice"),
    ("  - slug: calls\n    eventType: rpc_request\n    aggregation: COUNT\n    colour: red\n"
     "    groupBy: {chain: $.chain}\n",
     "meters.yaml: meter 'calls', colour: Extra inputs are not permitted"),
])
def test_invalid_meter_files_name_file_meter_and_field(tmp_path, extra, message):
    with pytest.raises(MeterFileError) as err:
        load_meters(_meter_file(tmp_path, BASE + extra))
    assert str(err.value).startswith(message)


def test_unreadable_files(tmp_path):
    with pytest.raises(MeterFileError, match="meters.yaml: not valid YAML"):
        load_meters(_meter_file(tmp_path, "meters: [\n"))
    weights = tmp_path / "compute_units.yaml"
    weights.write_text("default: 1\nmethods:\n  eth_call: -5\n")
    with pytest.raises(MeterFileError, match="compute_units.yaml: methods: method 'eth_call': weight -5 is negative"):
        load_compute_units(weights)


def test_every_meter_is_rolled_up_and_deduplicated(october, usage_store):
    roll_up_usage(usage_store, october, OCT_START, OCT_END)
    with psycopg.connect(october) as conn:
        rows = conn.execute("""
            SELECT project_id, sum(meter_requests), sum(meter_successful_requests), sum(meter_egress_bytes),
                   sum(meter_compute_units)
            FROM usage_rollups GROUP BY project_id ORDER BY project_id""").fetchall()
    assert [tuple(int(v) if not isinstance(v, str) else v for v in r) for r in rows] == [
        # 7 requests (a1 and a2 delivered twice, counted once): 6 eth_call x 20 CU + 1 eth_getLogs x 75 CU
        ("prj_a1", 7, 6, 6 * 500 + 20_000, 6 * 20 + 75),
        ("prj_a2", 3, 3, 1_500, 60),
        ("prj_b", 2, 2, 3_000_000_000, 600),                  # debug_traceTransaction x 300 CU
        ("prj_c", 13, 13, 6_500, 8 * 20 + 5 * 1),             # eth_blockNumber costs 1 CU
        ("prj_d", 31, 31, 15_500, 31 * 20),
        ("prj_x", 4, 4, 2_000, 80),
    ]


def test_meter_columns_are_added_once_and_never_lock_out_readers_after(db_url):
    """Rating ensures the meter columns first; an ALTER TABLE, even one with nothing to add, would
    lock usage_rollups against every analyst's query until the rating commits."""
    from billing_pipeline.steps.usage_tables import add_meter_columns
    from billing_pipeline.stores.meter_sql import MeterSet
    from billing_pipeline.stores.postgres import transaction

    meters = MeterSet.load()
    with transaction(db_url) as conn:
        conn.execute("ALTER TABLE usage_rollups DROP COLUMN IF EXISTS meter_compute_units")
        add_meter_columns(conn, meters)  # the missing column is added
    with transaction(db_url) as conn, psycopg.connect(db_url, autocommit=True) as analyst:
        add_meter_columns(conn, meters)  # all present: nothing to add, no lock taken
        analyst.execute("SET lock_timeout = '1s'")
        assert analyst.execute("SELECT count(meter_compute_units) FROM usage_rollups").fetchone() == (0,)
