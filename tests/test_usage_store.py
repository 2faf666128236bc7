"""The usage store on chdb: bound parameters, deterministic generation, dedup on request_id."""

from __future__ import annotations

from datetime import date, datetime, timezone

import psycopg

from billing_pipeline.demo.synthetic import UsageSpec, generate_usage
from billing_pipeline.stores.clickhouse import sql_text
from billing_pipeline.steps.usage import roll_up_usage
from month_fixture import october_events

HOSTILE = "org_a' OR 1=1; DROP TABLE requests_raw; --"


def test_sql_in_a_parameter_is_data(usage_store):
    usage_store.insert_arrow("requests_raw", october_events())
    sql = "SELECT count() AS n FROM requests_raw WHERE org_id = {org:String}"
    assert usage_store.query_arrow(sql, {"org": HOSTILE}).column("n")[0].as_py() == 0
    assert usage_store.query_arrow(sql, {"org": "org_a"}).column("n")[0].as_py() == 18
    # still there, and a value with quotes round-trips unchanged
    echo = usage_store.query_arrow("SELECT {v:String} AS v", {"v": HOSTILE}).column("v")[0].as_py()
    assert echo == HOSTILE
    assert usage_store.query_arrow("SELECT count() AS n FROM requests_raw").column("n")[0].as_py() == 69


def test_sql_in_a_value_is_data_in_postgres(db_url):
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO customers (org_id, legal_name, country) VALUES (%s, %s, 'US')", (HOSTILE, HOSTILE))
        assert conn.execute("SELECT legal_name FROM customers WHERE org_id = %s", (HOSTILE,)).fetchone() == (HOSTILE,)
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (1,)


def _checksum(store):
    return store.query_arrow(
        "SELECT count() AS n, sum(cityHash64(request_id, timestamp, org_id, project_id, chain, method, http_status,"
        " bytes_out, source_ip)) AS h FROM requests_raw").to_pylist()[0]


def test_generator_is_deterministic_and_skewed(usage_store, db_url):
    spec = UsageSpec(start=date(2026, 10, 1), days=31, events=200_000, orgs=20, projects=60, seed=11)
    rows = generate_usage(usage_store, spec)
    first = _checksum(usage_store)
    assert generate_usage(usage_store, spec) == rows  # regenerating replaces, never doubles
    assert _checksum(usage_store) == first
    assert rows == first["n"] > 200_000  # some requests are delivered twice

    top = usage_store.query_arrow(
        "SELECT org_id, count() AS n FROM requests_raw GROUP BY org_id ORDER BY n DESC").to_pylist()
    assert top[0]["n"] > 5 * top[-1]["n"]  # a few heavy customers, a long tail
    errors = usage_store.query_arrow("SELECT countIf(http_status >= 400) / count() AS r FROM requests_raw")
    assert 0.015 < errors.column("r")[0].as_py() < 0.025

    # Every request is counted exactly once: all 200,000 originals lie in October (a copy may be
    # delivered up to 5 s after midnight into November).
    start, end = datetime(2026, 10, 1, tzinfo=timezone.utc), datetime(2026, 11, 1, tzinfo=timezone.utc)
    summary = roll_up_usage(usage_store, db_url, start, end)
    distinct = usage_store.query_arrow("SELECT uniqExact(request_id) AS u FROM requests_raw").column("u")[0].as_py()
    in_november = usage_store.query_arrow(
        "SELECT count() AS n FROM requests_raw WHERE timestamp >= {e:DateTime64(3, 'UTC')}", {"e": end}
    ).column("n")[0].as_py()
    assert summary.requests == distinct == 200_000
    assert summary.duplicate_rows == rows - in_november - 200_000 > 0


def test_sql_files_take_values_only_as_bound_parameters():
    for name in ("usage_rollups", "usage_duplicates", "usage_source_totals", "generate_requests"):
        text = sql_text(name)
        assert "{window_start:DateTime64(3, 'UTC')}" in text or "{start:DateTime64(3, 'UTC')}" in text
        assert "%s" not in text and "%(" not in text


def test_the_embedded_store_open_in_another_process_is_named_and_opens_once_it_has_exited(tmp_path):
    """chdb is one process's engine: a command started while a Dagster run holds it gets a sentence
    naming that process and the way out, not chdb's 'Error initializing EmbeddedServer'."""
    import subprocess
    import sys

    import pytest

    from billing_pipeline.errors import StoreUnavailableError
    from billing_pipeline.stores.clickhouse import ChdbStore, release_chdb_sessions

    path = tmp_path / "chdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from billing_pipeline.stores.clickhouse import ChdbStore; "
                               f"ChdbStore({str(path)!r}); print('open', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        release_chdb_sessions()  # this process's own session (another test's path) is not the point
        with pytest.raises(StoreUnavailableError) as refused:
            ChdbStore(str(path))
        assert str(refused.value) == (
            f"the embedded usage store (chdb) at {path.resolve()} is open in another process (pid {holder.pid}); "
            "wait for it to finish (with the embedded store, runs and commands take turns), or set "
            "BILLING_CLICKHOUSE_URL to use a ClickHouse server, which any number of processes share")
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    store = ChdbStore(str(path))
    assert store.query_arrow("SELECT 1 AS one").to_pylist() == [{"one": 1}]
