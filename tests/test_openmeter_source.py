"""OpenMeter as the usage source: the same rollups as ClickHouse, retries, and bad values refused."""

from __future__ import annotations

import psycopg
import pytest

from billing_pipeline.errors import StoreUnavailableError
from billing_pipeline.steps.openmeter_usage import NegativeUsageError, roll_up_from_openmeter
from billing_pipeline.steps.usage import roll_up_usage
from billing_pipeline.stores.openmeter import OpenMeterClient
from month_fixture import OCT_END, OCT_START, OCTOBER_TOTALS, invoice_totals, october_events
from openmeter_http import OpenMeterServer

ROLLUPS = """SELECT day, org_id, project_id, chain, requests, successful_requests, error_requests, bytes_out,
                    meter_requests, meter_successful_requests, meter_egress_bytes, meter_compute_units
             FROM usage_rollups ORDER BY day, org_id, project_id, chain"""


def test_openmeter_gives_the_same_rollups_as_clickhouse(october, usage_store):
    roll_up_usage(usage_store, october, OCT_START, OCT_END)
    with psycopg.connect(october) as conn:
        from_clickhouse = conn.execute(ROLLUPS).fetchall()
    with OpenMeterServer(october_events().to_pylist()) as server:
        client = OpenMeterClient(server.url, token="om_secret")
        summary = roll_up_from_openmeter(client, october, OCT_START, OCT_END)
        assert {r["path"] for r in server.requests} == {f"/api/v1/meters/{m}/query" for m in
                                                        ("requests", "successful_requests", "egress_bytes",
                                                         "compute_units")}
        params = server.requests[0]["params"]
        assert (params["from"], params["to"], params["windowSize"], params["groupBy"]) == (
            ["2026-10-01T00:00:00Z"], ["2026-11-01T00:00:00Z"], ["DAY"], ["project_id", "chain"])
        assert server.requests[0]["authorization"] == "Bearer om_secret"
    with psycopg.connect(october) as conn:
        assert conn.execute(ROLLUPS).fetchall() == from_clickhouse
        assert conn.execute("SELECT reason, chain, raw_rows FROM quarantined_usage ORDER BY day").fetchall() == [
            ("missing_org_id", "eth-mainnet", 1), ("unknown_chain", "dogecoin-mainnet", 1)]
    assert summary.requests == 60 and summary.source_engine.startswith("openmeter http://127.0.0.1:")


def test_openmeter_outage_is_retried(october):
    with OpenMeterServer(october_events().to_pylist()) as server:
        server.fail_next = 2  # two 503s, then answers
        roll_up_from_openmeter(OpenMeterClient(server.url, backoff_seconds=0.01), october, OCT_START, OCT_END)
        assert len(server.requests) == 4 + 2


def test_negative_usage_is_refused_naming_the_row(october):
    with OpenMeterServer([]) as server:
        server.override = {"windowSize": "DAY", "data": [{
            "value": -5, "windowStart": "2026-10-03T00:00:00Z", "windowEnd": "2026-10-04T00:00:00Z",
            "subject": "org_a", "groupBy": {"project_id": "prj_a1", "chain": "eth-mainnet"}}]}
        with pytest.raises(NegativeUsageError, match="negative usage -5 for meter 'requests', day 2026-10-03, "
                                                      "org 'org_a', project 'prj_a1', chain 'eth-mainnet'"):
            roll_up_from_openmeter(OpenMeterClient(server.url), october, OCT_START, OCT_END)


def test_unreachable_openmeter_names_the_setting(october):
    client = OpenMeterClient("http://om:secret@127.0.0.1:1", max_attempts=2, backoff_seconds=0.01)
    with pytest.raises(StoreUnavailableError, match=r"cannot reach OpenMeter at BILLING_OPENMETER_URL='http://om:\*\*\*@127"):
        roll_up_from_openmeter(client, october, OCT_START, OCT_END)


def test_month_close_in_dagster_from_openmeter(db_url, chdb_path, instance):
    from billing_pipeline.close import close_month
    from billing_pipeline.domain.periods import Period
    from billing_pipeline.resources import OpenMeterResource
    from billing_pipeline.stores.postgres import transaction
    from month_fixture import seed_contracts
    from product_defs import product_defs

    with transaction(db_url) as conn:
        seed_contracts(conn)
    with OpenMeterServer(october_events().to_pylist()) as server:
        defs = product_defs(db_url, chdb_path, openmeter=OpenMeterResource(url=server.url))
        close_month(instance, Period.parse_month("2026-10"), definitions=defs)
    assert invoice_totals(db_url) == OCTOBER_TOTALS
