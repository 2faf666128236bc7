"""The ClickHouse-server backend (clickhouse-connect over HTTP) runs the same SQL as chdb."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import psycopg
import pytest

from billing_pipeline.close import close_month
from billing_pipeline.domain.periods import Period
from billing_pipeline.resources import ClickHouseResource
from billing_pipeline.stores.clickhouse import ClickHouseServerStore, _chdb_sessions, ensure_schema
from billing_pipeline.stores.postgres import transaction
from billing_pipeline.steps.usage import roll_up_usage
from clickhouse_http import ClickHouseHttpServer
from product_defs import product_defs
from month_fixture import OCT_END, OCT_START, OCTOBER_TOTALS, invoice_totals, october_events, seed_contracts


@pytest.fixture
def clickhouse_server(usage_store, chdb_path):
    with ClickHouseHttpServer(_chdb_sessions[str(Path(chdb_path).resolve())]) as server:
        yield server


def _rollups(url):
    with psycopg.connect(url) as conn:
        return (conn.execute("SELECT * FROM usage_rollups ORDER BY day, org_id, project_id, chain").fetchall(),
                conn.execute("""SELECT day, raw_rows, duplicate_rows, quarantined_rows, requests, bytes_out,
                                       source_query_sha256 FROM usage_rollup_days ORDER BY day""").fetchall())


def test_same_rollups_from_server_and_embedded(clickhouse_server, usage_store, db_url):
    server = ClickHouseServerStore(clickhouse_server.url)
    assert server.engine.startswith("clickhouse 26.")
    ensure_schema(server)
    server.insert_arrow("requests_raw", october_events())  # Arrow insert over HTTP

    via_server = roll_up_usage(server, db_url, OCT_START, OCT_END)
    from_server = _rollups(db_url)
    via_chdb = roll_up_usage(usage_store, db_url, OCT_START, OCT_END)
    assert _rollups(db_url) == from_server
    assert (via_server.requests, via_server.duplicate_rows, via_server.rows) == (60, 3, 38)
    assert via_chdb.days == via_server.days

    # Values travelled as ClickHouse bound parameters, never inside the SQL text.
    rollup_requests = [(sql, params) for sql, params in clickhouse_server.requests if "window_start" in sql]
    assert rollup_requests
    for sql, params in rollup_requests:
        assert "{window_start:DateTime64(3, 'UTC')}" in sql and "2026-10-" not in sql
    # the window totals first, then one ClickHouse pass per chunk of days (a small month: a week each)
    assert sorted({params["window_start"] for _, params in rollup_requests}) == [
        f"2026-10-{day:02d} 00:00:00.000" for day in range(1, 32, 7)]


def test_sql_in_a_parameter_is_data_on_the_server(clickhouse_server):
    server = ClickHouseServerStore(clickhouse_server.url)
    ensure_schema(server)
    server.insert_arrow("requests_raw", october_events())
    hostile = "x' OR '1'='1"
    sql = "SELECT count() AS n FROM requests_raw WHERE org_id = {org:String}"
    assert server.query_arrow(sql, {"org": hostile}).column("n")[0].as_py() == 0
    assert server.query_arrow(sql, {"org": "org_c"}).column("n")[0].as_py() == 13


def test_month_close_in_dagster_through_the_server_backend(clickhouse_server, db_url):
    server = ClickHouseServerStore(clickhouse_server.url)
    ensure_schema(server)
    server.insert_arrow("requests_raw", october_events())
    with transaction(db_url) as conn:
        seed_contracts(conn)
    defs = product_defs(db_url, clickhouse=ClickHouseResource(url=clickhouse_server.url))
    with dg.DagsterInstance.ephemeral() as instance:
        close_month(instance, Period.parse_month("2026-10"), definitions=defs)
    assert invoice_totals(db_url) == OCTOBER_TOTALS
