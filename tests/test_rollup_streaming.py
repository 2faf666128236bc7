"""The rollup streams its window in chunks of days: same rows as day by day, in bounded memory."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone

import psycopg
import pyarrow as pa
import pytest

from billing_pipeline.steps import usage, usage_chunks, usage_copies, usage_rows, usage_tables
from billing_pipeline.stores.meter_sql import MeterSet
from billing_pipeline.steps.usage import roll_up_usage
from billing_pipeline.steps.usage_chunks import plan_chunks, prefetched

UTC = timezone.utc


def _source(first: date, days: int, rollup_keys: int, raw_rows: int) -> list[dict]:
    return [{"day": first + timedelta(days=i), "rollup_keys": rollup_keys, "raw_rows": raw_rows}
            for i in range(days)]


def _dates(windows) -> list[tuple[str, str]]:
    return [(a.date().isoformat(), b.date().isoformat()) for a, b in windows]


def test_chunks_are_sized_by_the_rollup_rows_and_raw_rows_they_hold():
    start, end = datetime(2026, 9, 30, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    # a small month: a week at a time
    assert _dates(plan_chunks(start, end, _source(date(2026, 9, 30), 33, 1_000, 50_000))) == [
        ("2026-09-30", "2026-10-07"), ("2026-10-07", "2026-10-14"), ("2026-10-14", "2026-10-21"),
        ("2026-10-21", "2026-10-28"), ("2026-10-28", "2026-11-02")]
    # 10k contracts, 100M requests: about 200k rollup rows and 3.2M raw rows a day, six days a chunk
    assert _dates(plan_chunks(start, end, _source(date(2026, 9, 30), 33, 200_000, 3_200_000)))[:2] == [
        ("2026-09-30", "2026-10-06"), ("2026-10-06", "2026-10-12")]
    # 100k contracts: 1.2M rollup rows a day, one day a chunk; a day over the bounds is never split
    assert _dates(plan_chunks(start, end, _source(date(2026, 9, 30), 33, 1_200_000, 3_200_000)))[:2] == [
        ("2026-09-30", "2026-10-01"), ("2026-10-01", "2026-10-02")]
    assert len(plan_chunks(start, end, _source(date(2026, 9, 30), 33, 9_000_000, 90_000_000))) == 33
    # days without rows cost nothing; a window starting mid-day keeps its start
    assert plan_chunks(datetime(2026, 10, 5, 12, tzinfo=UTC), datetime(2026, 10, 6, tzinfo=UTC), []) == [
        (datetime(2026, 10, 5, 12, tzinfo=UTC), datetime(2026, 10, 6, tzinfo=UTC))]


def test_prefetched_keeps_the_order_and_raises_the_workers_error():
    assert list(prefetched(lambda x, _released: x * 10, [1, 2, 3])) == [10, 20, 30]
    assert list(prefetched(lambda x, _released: x, [])) == []

    def work(x, _released):
        if x == 2:
            raise ValueError("day 2 failed")
        return x

    results = prefetched(work, [1, 2, 3])
    assert next(results) == 1
    with pytest.raises(ValueError, match="day 2 failed"):
        next(results)


def test_prefetched_work_can_wait_until_the_previous_result_is_let_go():
    """The rollup's big queries wait until the previous window is written and dropped, so that its
    memory can go back first; the worker computes ahead up to that point."""
    started, let_go = [], []

    def work(x, released):
        started.append(x)
        assert released.wait(10)
        let_go.append(x)
        return x

    results = prefetched(work, [1, 2, 3])
    assert next(results) == 1
    time.sleep(0.2)
    assert (started, let_go) == ([1, 2], [1])  # 2 began, and waits while 1 is held
    assert next(results) == 2  # asking for the next lets go of 1
    assert let_go[:2] == [1, 2]
    time.sleep(0.2)
    assert (started, let_go) == ([1, 2, 3], [1, 2])
    results.close()  # a caller that stops early leaves no worker waiting forever
    assert let_go == [1, 2, 3]


def _rollups(db_url: str) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT * FROM usage_rollups ORDER BY day, org_id, project_id, chain").fetchall() + \
            conn.execute("SELECT day, raw_rows, duplicate_rows, quarantined_rows, requests, bytes_out "
                         "FROM usage_rollup_days ORDER BY day").fetchall()


def test_a_month_in_chunks_equals_its_days_one_by_one(october, usage_store, monkeypatch):
    monkeypatch.setattr(usage_chunks, "MAX_CHUNK_DAYS", 4)  # the fixture's month is small: chunks of several days
    start, end = datetime(2026, 9, 30, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    month = roll_up_usage(usage_store, october, start, end, allow_empty_days=True)
    in_chunks = _rollups(october)
    with psycopg.connect(october) as conn:
        sums: dict = {}
        for org, chain, requests, bytes_out in conn.execute(
                "SELECT org_id, chain, requests, bytes_out FROM usage_rollups"):
            got = sums.get((org, chain), (0, 0))
            sums[(org, chain)] = (got[0] + requests, got[1] + bytes_out)
    expected_top = sorted(((o, c, r, b) for (o, c), (r, b) in sums.items()), key=lambda t: (-t[2], t[0], t[1]))[:10]
    assert [tuple(r.values()) for r in month.preview.to_pylist()] == expected_top
    day = start
    while day < end:
        roll_up_usage(usage_store, october, day, day + timedelta(days=1), allow_empty_days=True)
        day += timedelta(days=1)
    assert _rollups(october) == in_chunks
    assert (month.requests, month.duplicate_rows, month.rows, len(month.days)) == (63, 4, 40, 33)


def test_only_a_window_past_the_bounds_waits_for_the_previous_one(october, usage_store, monkeypatch):
    """Windows within the bounds overlap ClickHouse and PostgreSQL fully; a window past them (a
    day bigger than the bounds alone) waits for the previous one to be written and let go of
    before its big queries. Either way the rows are the same."""
    waited: list[bool] = []
    collect_usage = usage.collect_usage

    def recording(*args):
        waited.append(args[-1] is not None)
        return collect_usage(*args)

    monkeypatch.setattr(usage, "collect_usage", recording)
    start, end = datetime(2026, 9, 30, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    within = roll_up_usage(usage_store, october, start, end, allow_empty_days=True)
    rows_within = _rollups(october)
    assert waited == [False] * 5  # five windows of up to seven days, none past the bounds
    waited.clear()
    monkeypatch.setattr(usage_chunks, "MAX_CHUNK_RAW_ROWS", 0)  # every day with a request is past them
    past = roll_up_usage(usage_store, october, start, end, allow_empty_days=True)
    assert _rollups(october) == rows_within
    assert (past.requests, past.rows) == (within.requests, within.rows) == (63, 40)
    assert len(waited) == 33 and sum(waited) == len([d for d in past.days if d.raw_rows])


def _rollup_rows(rows: list[tuple], meters) -> pa.Table:
    schema = usage_rows.rollup_schema(meters)
    return pa.Table.from_pylist([dict(zip(schema.names, r)) for r in rows], schema=schema)


def test_copies_are_subtracted_per_key_in_the_deliveries_order():
    meters = MeterSet.load()
    extra = len(meters.columns)  # one value per declared meter, after the four counters
    d1, d2 = date(2026, 10, 5), date(2026, 10, 6)
    deliveries = _rollup_rows([
        (d1, "org_a", "prj_1", "eth-mainnet", 10, 9, 1, 1000) + (7,) * extra,
        (d1, "org_a", "prj_1", "solana-mainnet", 2, 2, 0, 200) + (7,) * extra,
        (d1, "org_b", "prj_2", "eth-mainnet", 1, 1, 0, 50) + (7,) * extra,
        (d2, "org_a", "prj_1", "eth-mainnet", 5, 5, 0, 500) + (7,) * extra], meters)
    duplicates = _rollup_rows([
        (d1, "org_b", "prj_2", "eth-mainnet", 1, 1, 0, 50) + (7,) * extra,  # every delivery a copy: dropped
        (d1, "org_a", "prj_1", "eth-mainnet", 3, 2, 1, 300) + (1,) * extra], meters)
    result = usage_copies.subtract_duplicates(deliveries, duplicates, meters)
    additive = set(meters.additive_columns)
    assert [tuple(r.values())[:8] for r in result.to_pylist()] == [
        (d1, "org_a", "prj_1", "eth-mainnet", 7, 7, 0, 700),
        (d1, "org_a", "prj_1", "solana-mainnet", 2, 2, 0, 200),
        (d2, "org_a", "prj_1", "eth-mainnet", 5, 5, 0, 500)]
    first = result.to_pylist()[0]
    assert all(first[c] == (6 if c in additive else 7) for c in meters.columns)
    # no key left with nothing: every delivery row kept, none copied by a filter
    kept = usage_copies.subtract_duplicates(deliveries, duplicates.slice(1), meters)
    assert [r["requests"] for r in kept.to_pylist()] == [7, 2, 1, 5]
    # streamed as ClickHouse streams them, a batch at a time: the same rows
    streamed = usage_copies.subtract_duplicates(iter(deliveries.to_batches(max_chunksize=1)), duplicates, meters)
    assert streamed.to_pylist() == result.to_pylist()
    assert usage_copies.subtract_duplicates(iter([]), duplicates.slice(0, 0), meters).num_rows == 0


def test_copies_of_keys_never_delivered_stop_the_rollup():
    meters = MeterSet.load()
    extra = len(meters.columns)
    deliveries = _rollup_rows([(date(2026, 10, 5), "org_a", "prj_1", "eth-mainnet", 1, 1, 0, 10) + (1,) * extra],
                              meters)
    stray = _rollup_rows([(date(2026, 10, 5), "org_z", "prj_9", "eth-mainnet", 1, 1, 0, 10) + (1,) * extra], meters)
    too_many = _rollup_rows([(date(2026, 10, 5), "org_a", "prj_1", "eth-mainnet", 2, 2, 0, 20) + (2,) * extra],
                            meters)
    for duplicates in (stray, too_many):
        with pytest.raises(usage_copies.RollupConsistencyError, match="re-run it"):
            usage_copies.subtract_duplicates(deliveries, duplicates, meters)
        with pytest.raises(usage_copies.RollupConsistencyError, match="re-run it"):
            usage_copies.subtract_duplicates(iter(deliveries.to_batches()), duplicates, meters)


def test_the_chdb_store_streams_a_result_in_batches(usage_store):
    # ClickHouse's blocks of three rows, handed on once four rows have come
    batches = list(usage_store.stream_arrow(
        "SELECT number AS n FROM numbers({count:UInt64}) SETTINGS max_block_size = 3", {"count": 10},
        rows_per_batch=4))
    assert [b.num_rows for b in batches] == [6, 4]
    assert pa.Table.from_batches(batches).column("n").to_pylist() == list(range(10))


def test_copy_candidates_take_passes_only_for_a_big_window_in_this_process(usage_store):
    day = {"raw_rows": 30_500_000}
    # 100k contracts at 1B requests: a day and its lookback are 61 M keys
    assert usage_copies.copy_key_passes(usage_store, [day], 24) == 2
    # 10k contracts at 100M: six days and one of lookback, 21 M keys, one query as before
    assert usage_copies.copy_key_passes(usage_store, [{"raw_rows": 3_050_000}] * 6, 24) == 1
    assert usage_copies.copy_key_passes(usage_store, [], 24) == 1

    class Server:  # a ClickHouse server's memory is the server's: one query, whatever the window
        in_process = False

    assert usage_copies.copy_key_passes(Server(), [day], 24) == 1


def test_copy_candidates_found_in_passes_give_the_same_rollups(october, usage_store, monkeypatch):
    """Each pass takes one share of the request keys into a table of its own; the copies, the
    split at local midnights and the day totals are those of the single query, and no table is
    left behind."""
    start, end = datetime(2026, 9, 30, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    with psycopg.connect(october) as conn:  # org_a billed in Istanbul: its days split at local midnights
        conn.execute("UPDATE contracts SET timezone = 'Europe/Istanbul' WHERE contract_id = 'CTR-A'")
    one_query = roll_up_usage(usage_store, october, start, end, allow_empty_days=True)
    rows = _rollups(october)
    with psycopg.connect(october) as conn:
        split = conn.execute("SELECT * FROM usage_before_local_midnight ORDER BY 1, 2, 3, 4").fetchall()
    assert len(split) > 1
    passes: list[int] = []
    query_duplicates = usage.query_duplicates

    def recording(store, meters, params, n, before_local_midnight=False):
        passes.append(n)
        return query_duplicates(store, meters, params, n, before_local_midnight)

    monkeypatch.setattr(usage, "query_duplicates", recording)
    monkeypatch.setattr(usage_copies, "COPY_KEYS_PER_PASS", 5)
    in_passes = roll_up_usage(usage_store, october, start, end, allow_empty_days=True)
    assert max(passes) > 1
    assert _rollups(october) == rows
    with psycopg.connect(october) as conn:
        assert conn.execute("SELECT * FROM usage_before_local_midnight ORDER BY 1, 2, 3, 4").fetchall() == split
    assert (in_passes.requests, in_passes.duplicate_rows, in_passes.rows) == (
        one_query.requests, one_query.duplicate_rows, one_query.rows) == (63, 4, 40)
    assert in_passes.source_query_sha256 == one_query.source_query_sha256  # the same rule, however run
    left = usage_store.query_arrow("SELECT count() AS n FROM system.tables WHERE name LIKE 'rollup_copy_candidates%'")
    assert left.column("n")[0].as_py() == 0



SPILL_SETTING = "max_bytes_before_external_group_by = 536870912"


def _spilled_parts(store) -> int:
    rows = store.query_arrow("SELECT sum(value) AS n FROM system.events WHERE event = 'ExternalAggregationWritePart'")
    return rows.column("n")[0].as_py() or 0


def test_copies_found_through_a_spilled_hash_table_give_the_same_rollups(db_url, usage_store, monkeypatch):
    """At a billion requests a month the copies' hash table is spilled to disk; no row may change."""
    from billing_pipeline.demo.synthetic import UsageSpec, generate_usage
    from billing_pipeline.steps import reconciliation
    from billing_pipeline.stores.clickhouse import sql_text

    assert SPILL_SETTING in sql_text("usage_duplicates") and SPILL_SETTING in sql_text("usage_direct_totals")
    # two days, 300k requests (1,487 delivered twice): one chunk, enough keys to spill
    generate_usage(usage_store, UsageSpec(start=date(2026, 10, 5), days=2, events=300_000, seed=3))
    start, end = datetime(2026, 10, 5, tzinfo=UTC), datetime(2026, 10, 7, tzinfo=UTC)
    in_memory = roll_up_usage(usage_store, db_url, start, end)
    in_memory_rows = _rollups(db_url)

    def spill_everything(name: str) -> str:
        # a 1-byte bound; one thread, so that the keys reach the size at which ClickHouse's table
        # goes two-level, the form it spills (with two threads each holds too few keys here)
        return sql_text(name).replace(SPILL_SETTING, "max_bytes_before_external_group_by = 1, max_threads = 1")

    monkeypatch.setattr(usage, "sql_text", spill_everything)
    monkeypatch.setattr(usage_copies, "sql_text", spill_everything)
    monkeypatch.setattr(reconciliation, "sql_text", spill_everything)
    spilled_before = _spilled_parts(usage_store)
    spilled = roll_up_usage(usage_store, db_url, start, end)
    assert _spilled_parts(usage_store) > spilled_before
    assert _rollups(db_url) == in_memory_rows
    assert (spilled.requests, spilled.duplicate_rows) == (in_memory.requests, in_memory.duplicate_rows) == (300_000, 1_487)
    assert reconciliation.rollups_match_clickhouse(usage_store, db_url, start, end).passed


def _rollup_table(days: list[date]) -> pa.Table:
    meters = MeterSet.load()
    n = len(days)
    return pa.table({"day": pa.array(days, pa.date32()), "org_id": [f"org_{i}" for i in range(n)],
                     "project_id": ["prj"] * n, "chain": ["eth-mainnet"] * n, "requests": [2] * n,
                     "successful_requests": [1] * n, "error_requests": [1] * n, "bytes_out": [10] * n,
                     **{c: [1] * n for c in meters.columns}}).cast(usage_rows.rollup_schema(meters))


@pytest.mark.parametrize("shuffled", [False, True])
def test_a_whole_month_is_copied_frozen_into_its_partition_and_its_edges_through_the_parent(db_url, shuffled):
    """Rows of a month truncated in the transaction go straight into its partition with FREEZE
    (all-visible once committed: no later pass sets their hint bits or freezes them); a part of a
    month goes through usage_rollups. Rows out of day order only make more COPYs."""
    days = [date(2026, 9, 30)] * 2 + [date(2026, 10, 1) + timedelta(days=i) for i in range(31)] * 3 + \
        [date(2026, 11, 1)] * 2
    rows = _rollup_table(sorted(days, key=lambda d: (d.day * 7919) % 31) if shuffled else days)
    with psycopg.connect(db_url) as conn:
        usage_tables.add_meter_columns(conn, MeterSet.load())
        months = usage_tables.clear_rollups(conn, date(2026, 9, 30), date(2026, 11, 2))
        assert [(m.first.isoformat(), m.emptied) for m in months] == [
            ("2026-09-01", False), ("2026-10-01", True), ("2026-11-01", False)]
        usage_tables.copy_rollups(conn, rows, [m for m in months if m.emptied])
        for m in months:
            conn.execute(f"ANALYZE {m.partition.as_string(conn)}")
        conn.commit()
        counts = dict(conn.execute("SELECT to_char(day, 'YYYY-MM'), count(*) FROM usage_rollups GROUP BY 1").fetchall())
        visible = dict(conn.execute(
            "SELECT relname, relallvisible = relpages AND relpages > 0 FROM pg_class "
            "WHERE relname IN ('usage_rollups_2026_09', 'usage_rollups_2026_10')").fetchall())
    assert counts == {"2026-09": 2, "2026-10": 93, "2026-11": 2}
    assert visible == {"usage_rollups_2026_09": False, "usage_rollups_2026_10": True}


def test_a_day_rolled_up_alone_splits_at_local_midnights_as_the_month_s_close_does(october, usage_store):
    """org_a billed in Singapore from 20 October: the month's close splits its every day at the
    local midnight (rating reads its whole month in Singapore days). A day rolled up by itself
    (the daily cron, a dispute) took only the contracts around that day, found none in a zone, and
    deleted the day's split: its usage before the local midnight was then counted unrated."""
    with psycopg.connect(october) as conn:
        conn.execute("UPDATE contracts SET timezone = 'Asia/Singapore', start_at = '2026-10-20' "
                     "WHERE contract_id = 'CTR-A'")
    roll_up_usage(usage_store, october, datetime(2026, 9, 30, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC),
                  allow_empty_days=True)
    split_sql = "SELECT * FROM usage_before_local_midnight WHERE day = %s ORDER BY 1, 2, 3, 4"
    with psycopg.connect(october) as conn:
        day = conn.execute("SELECT min(day) FROM usage_before_local_midnight WHERE org_id = 'org_a'").fetchone()[0]
        month_split = conn.execute(split_sql, (day,)).fetchall()
    assert day < date(2026, 10, 18) and month_split  # a day the contract's own window never reached
    alone = datetime.combine(day, datetime.min.time(), UTC)
    roll_up_usage(usage_store, october, alone, alone + timedelta(days=1), allow_empty_days=True)
    with psycopg.connect(october) as conn:
        assert conn.execute(split_sql, (day,)).fetchall() == month_split
