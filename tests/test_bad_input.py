"""Bad raw usage in ClickHouse (chdb), one case per kind: each row is quarantined with a readable
reason and counted on its day (raw rows = billed + duplicates + quarantined), refused by ClickHouse
at insert naming the column, reported as out of range, or kept as unrated usage; the counts show
in the usage_rollups checks. Nothing crashes and nothing disappears. (Bad catalog files, contracts,
bulletins and webhook payloads: test_bad_input_refused.py.)"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg
import psycopg
import pyarrow as pa
import pytest

from billing_pipeline.domain.periods import Period
from billing_pipeline.steps.quarantine import rows_out_of_range
from billing_pipeline.steps.rating import rate_month
from billing_pipeline.steps.usage import roll_up_usage
from month_fixture import OCT_END, OCT_START, _row, october_events

UTC = timezone.utc
DAY_START = datetime(2026, 10, 5, tzinfo=UTC)
T = DAY_START + timedelta(hours=9)
# Identifiers as bytes and numbers signed, so a row can carry what the gateway should never log
# (invalid UTF-8, NUL, a negative byte count).
RAW_SCHEMA = pa.schema([pa.field(f.name, pa.binary()) if f.name in ("request_id", "org_id", "project_id", "chain")
                        else pa.field(f.name, pa.int64()) if f.name in ("http_status", "bytes_out")
                        else f for f in october_events().schema])
GOOD = _row(T, "ok1", "org_a", "prj_a1", "eth-mainnet")  # billed: 1 request, 500 bytes
MB_PROJECT = b"p" * 1_000_000


def bad(**changes) -> dict:
    row = _row(T + timedelta(seconds=1), "bad1", "org_a", "prj_a1", "eth-mainnet")
    return {**row, **changes}


# kind -> bad rows loaded beside GOOD on 5 October, the quarantined_usage rows expected
# (reason, org, project, chain, rows) and the day (raw rows, duplicates, quarantined, requests, bytes out)
RAW_KINDS = {
    "null_org_id": ([bad(org_id=None)], [("missing_org_id", "", "prj_a1", "eth-mainnet", 1)], (2, 0, 1, 1, 500)),
    "empty_project_id": ([bad(project_id="")], [("missing_project_id", "org_a", "", "eth-mainnet", 1)],
                         (2, 0, 1, 1, 500)),
    "null_chain": ([bad(chain=None)], [("missing_chain", "org_a", "prj_a1", "", 1)], (2, 0, 1, 1, 500)),
    # two different requests without an id: both held, neither merged into the other as a "copy"
    "null_request_id": ([bad(request_id=None), bad(request_id="", timestamp=T + timedelta(seconds=2))],
                        [("missing_request_id", "org_a", "prj_a1", "eth-mainnet", 2)], (3, 0, 2, 1, 500)),
    "unknown_chain": ([bad(chain="dogecoin-mainnet")], [("unknown_chain", "org_a", "prj_a1", "dogecoin-mainnet", 1)],
                      (2, 0, 1, 1, 500)),
    "chain_in_other_case": ([bad(chain="ETH-MAINNET")], [("unknown_chain", "org_a", "prj_a1", "ETH-MAINNET", 1)],
                            (2, 0, 1, 1, 500)),
    # -1 written into the UInt64 column wraps to 2^64 - 1 (it used to wrap the day's sum to 499 bytes)
    "negative_bytes_out": ([bad(bytes_out=-1)], [("negative_bytes_out", "org_a", "prj_a1", "eth-mainnet", 1)],
                           (2, 0, 1, 1, 500)),
    "absurd_bytes_out": ([bad(bytes_out=4 * 10**18)], [("absurd_bytes_out", "org_a", "prj_a1", "eth-mainnet", 1)],
                         (2, 0, 1, 1, 500)),
    "impossible_http_status": ([bad(http_status=None), bad(request_id="bad2", http_status=999)],
                               [("invalid_http_status", "org_a", "prj_a1", "eth-mainnet", 2)], (3, 0, 2, 1, 500)),
    "sql_in_project_id": ([bad(project_id="p'; DROP TABLE usage_rollups; --")],
                          [("invalid_characters_in_project_id", "org_a", "p'; DROP TABLE usage_rollups; --",
                            "eth-mainnet", 1)], (2, 0, 1, 1, 500)),
    "whitespace_padded_org_id": ([bad(org_id=" org_a")],
                                 [("invalid_characters_in_org_id", " org_a", "prj_a1", "eth-mainnet", 1)],
                                 (2, 0, 1, 1, 500)),
    "oversized_project_id": ([bad(project_id=MB_PROJECT)], [("oversized_project_id", "org_a",
                                                               "p" * 64 + "... (1000000 bytes)", "eth-mainnet", 1)],
                             (2, 0, 1, 1, 500)),
    "oversized_request_id": ([bad(request_id="r" * 10_000)],
                             [("oversized_request_id", "org_a", "prj_a1", "eth-mainnet", 1)], (2, 0, 1, 1, 500)),
    "invalid_utf8_org_id": ([bad(org_id=b"org_\xff\xfe")],
                            [("invalid_utf8_org_id", "org_\ufffd", "prj_a1", "eth-mainnet", 1)],
                            (2, 0, 1, 1, 500)),
    "latin1_encoded_project_id": ([bad(project_id="prj_ba\u015f".encode("iso-8859-9"))],
                                  [("invalid_utf8_project_id", "org_a", "prj_ba\ufffd", "eth-mainnet", 1)],
                                  (2, 0, 1, 1, 500)),
    "control_characters_in_project_id": ([bad(project_id=b"prj\n\x00a1")],
                                         [("control_characters_in_project_id", "org_a", "prj??a1", "eth-mainnet", 1)],
                                         (2, 0, 1, 1, 500)),
    # the same request re-sent 2 s later: counted as a duplicate, billed once, not quarantined
    "duplicate_request_id": ([bad(request_id="ok1", timestamp=T + timedelta(seconds=2))], [], (2, 1, 0, 1, 500)),
}


def _load(store, rows) -> None:
    store.insert_arrow("requests_raw", pa.Table.from_pylist(rows, schema=RAW_SCHEMA))


def _day(url) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT raw_rows, duplicate_rows, quarantined_rows, requests, bytes_out "
                            "FROM usage_rollup_days WHERE day = '2026-10-05'").fetchone()


def _quarantined(url) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT reason, org_id, project_id, chain, raw_rows FROM quarantined_usage "
                            "ORDER BY reason, org_id, project_id, chain").fetchall()


@pytest.mark.parametrize("rows, quarantined, day", RAW_KINDS.values(), ids=RAW_KINDS.keys())
def test_a_bad_raw_row_is_quarantined_with_its_reason_and_counted(usage_store, db_url, rows, quarantined, day):
    _load(usage_store, [GOOD, *rows])
    summary = roll_up_usage(usage_store, db_url, DAY_START, DAY_START + timedelta(days=1))
    assert _quarantined(db_url) == quarantined
    assert _day(db_url) == day
    raw, duplicates, held, requests, _ = day
    assert raw == requests + duplicates + held  # nothing disappears
    assert (summary.requests, summary.quarantined_rows) == (requests, held)
    with psycopg.connect(db_url) as conn:  # only the good row is billed
        billed = conn.execute("SELECT org_id, project_id, chain, requests, bytes_out FROM usage_rollups").fetchall()
    assert billed == [("org_a", "prj_a1", "eth-mainnet", 1, 500)]


@pytest.mark.parametrize("column, value, message", [
    ("http_status", "abc", "Cannot parse string 'abc' as UInt16"),
    ("source_ip", "not-an-ip", "Invalid IPv6 value"),
], ids=["malformed_http_status", "malformed_source_ip"])
def test_a_malformed_row_is_refused_by_clickhouse_naming_the_column(usage_store, column, value, message):
    table = pa.table({"timestamp": pa.array([T], pa.timestamp("ms", tz="UTC")), "request_id": ["m1"],
                      column: pa.array([value], pa.string())})
    with pytest.raises(RuntimeError) as err:  # chdb's ChdbError
        usage_store.insert_arrow("requests_raw", table)
    assert message in str(err.value) and f"column: {column}" in str(err.value)
    assert usage_store.query_arrow("SELECT count() AS n FROM requests_raw").column("n")[0].as_py() == 0


def test_rows_stamped_in_the_future_or_before_2000_are_counted(usage_store):
    # a timestamp far ahead of the clock, and a missing one (stored as 1970-01-01): no daily rollup reads them
    _load(usage_store, [GOOD, bad(timestamp=datetime(2099, 1, 1, tzinfo=UTC)), bad(request_id="bad2", timestamp=None)])
    found = [(r.reason, r.raw_rows, r.earliest.isoformat(), r.latest.isoformat())
             for r in rows_out_of_range(usage_store)]
    assert found == [("ancient_timestamp", 1, "1970-01-01T00:00:00+00:00", "1970-01-01T00:00:00+00:00"),
                     ("future_timestamp", 1, "2099-01-01T00:00:00+00:00", "2099-01-01T00:00:00+00:00")]
    # a row an hour ahead of the clock is drift, not a broken timestamp
    assert [r.reason for r in rows_out_of_range(usage_store, now=datetime(2098, 12, 31, 23, 30, tzinfo=UTC))] == [
        "ancient_timestamp"]


def test_usage_of_an_org_without_a_contract_is_kept_unrated(october, usage_store):
    _load(usage_store, [_row(T, "n1", "org_nobody", "prj_n", "eth-mainnet"),
                        _row(T, "n2", "org_nobody", "prj_n", "base-mainnet")])
    roll_up_usage(usage_store, october, OCT_START - timedelta(days=1), OCT_END + timedelta(days=1))
    summary = rate_month(october, Period.parse_month("2026-10"))
    assert (summary.unrated_requests, summary.unrated_orgs) == (6, ["org_nobody", "org_x"])
    with psycopg.connect(october) as conn:
        assert conn.execute("SELECT org_id, chain, requests, reason FROM unrated_usage ORDER BY 1, 2").fetchall() == [
            ("org_nobody", "base-mainnet", 1, "no contract covers these days"),
            ("org_nobody", "eth-mainnet", 1, "no contract covers these days"),
            ("org_x", "eth-mainnet", 4, "no contract covers these days")]


def _check(instance, name):
    key = dg.AssetCheckKey(dg.AssetKey("usage_rollups"), name)
    evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key] \
        .event.dagster_event.event_specific_data
    return evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}


def test_every_raw_kind_in_one_day_adds_up_and_turns_the_check_red(usage_store, billing_defs, instance, db_url):
    rows = [GOOD, _row(T + timedelta(minutes=5), "ok2", "org_b", "prj_b", "bsc-mainnet", bytes_out=700)]
    for n, (kind_rows, _, _) in enumerate(RAW_KINDS.values()):  # every kind's rows, their ids kept apart
        rows += [{**r, "request_id": f"{r['request_id']}-{n}"} if (r["request_id"] or "").startswith("bad") else r
                 for r in kind_rows]
    rows += [bad(request_id="future", timestamp=datetime(2099, 1, 1, tzinfo=UTC)),
             bad(request_id="epoch", timestamp=None)]
    _load(usage_store, rows)
    job = billing_defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("usage_rollups")],
                                  partition_key="2026-10-05").success

    by_reason = {"absurd_bytes_out": 1, "control_characters_in_project_id": 1, "invalid_characters_in_org_id": 1,
                 "invalid_characters_in_project_id": 1, "invalid_http_status": 2, "invalid_utf8_org_id": 1,
                 "invalid_utf8_project_id": 1, "missing_chain": 1, "missing_org_id": 1, "missing_project_id": 1,
                 "missing_request_id": 2, "negative_bytes_out": 1, "oversized_project_id": 1,
                 "oversized_request_id": 1, "unknown_chain": 2}
    assert sum(by_reason.values()) == 18
    # 2 good rows and 19 bad ones on the day: 21 = 2 billed + 1 duplicate + 18 quarantined (the future and
    # the epoch rows lie on other days, outside every rollup)
    assert _day(db_url) == (21, 1, 18, 2, 1200)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT sum(raw_rows) FROM quarantined_usage").fetchone() == (18,)
        assert conn.execute("SELECT count(*) FROM usage_rollups").fetchone() == (2,)  # SQL in an id was only data
    passed, meta = _check(instance, "no_quarantined_rows")
    assert passed is False
    assert (meta["quarantined_rows"], meta["quarantined_by_reason"]) == (18, by_reason)
    assert meta["out_of_range_rows"] == {"ancient_timestamp": 1, "future_timestamp": 1}
    assert _check(instance, "rollups_match_clickhouse")[0] is True  # the plain ClickHouse count agrees
    metadata = instance.get_latest_materialization_event(dg.AssetKey("usage_rollups")).asset_materialization.metadata
    assert [metadata[k].value for k in ("raw_rows", "duplicate_rows_removed", "quarantined_rows", "requests")] == [
        21, 1, 18, 2]


def test_rows_stored_under_an_older_quarantine_rule_are_judged_again_by_the_current_one(usage_store, db_url):
    # An earlier rule that found nothing wrong, and a bad row stored under it: row_defect is computed
    # at insert, so the row carries the old verdict until ensure_schema sees the rule changed.
    from billing_pipeline.stores.clickhouse import ensure_schema
    usage_store.command("ALTER TABLE requests_raw MODIFY COLUMN row_defect LowCardinality(String) "
                        "MATERIALIZED '' COMMENT 'usage_row_defect.sql 0000000000000000'")
    _load(usage_store, [GOOD, bad(project_id="p'; DROP TABLE usage_rollups; --")])
    assert usage_store.query_arrow("SELECT countIf(row_defect = '') AS n FROM requests_raw").column("n")[0].as_py() == 2
    ensure_schema(usage_store)
    roll_up_usage(usage_store, db_url, DAY_START, DAY_START + timedelta(days=1))
    assert _quarantined(db_url) == [("invalid_characters_in_project_id", "org_a", "p'; DROP TABLE usage_rollups; --",
                                     "eth-mainnet", 1)]
    assert _day(db_url) == (2, 0, 1, 1, 500)
