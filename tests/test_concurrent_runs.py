"""Two runs of one partition at once (the automation sensor's and a person's re-run from the UI,
or a dispute's): the writers of a partition take turns, and the later one's rows stand, as if
they had run one after the other. Before, the later failed on a primary key it had not deleted."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from decimal import Decimal

from billing_pipeline.close import close_month
from billing_pipeline.domain.periods import Period
from billing_pipeline.steps.invoicing import draft_month
from billing_pipeline.steps.rating import rate_month
from billing_pipeline.steps.usage import roll_up_usage
from at_once import at_once, failures
from test_month_close import _snapshot

OCTOBER = Period.parse_month("2026-10")


class TakingTurns:
    """The test's chdb store for two threads: chdb's session is the process's, and two threads'
    queries at once mix up its parameters. Each query, and each stream until it is read, takes
    its turn; PostgreSQL, what this test is about, is not serialised. (Two runs of the product
    are two processes, each with its own engine or its own connection to a ClickHouse server.)"""

    def __init__(self, store) -> None:
        self._store, self._turn = store, threading.RLock()

    def __getattr__(self, name):
        attribute = getattr(self._store, name)
        if not callable(attribute) or name == "stream_arrow":
            return attribute

        def in_turn(*args, **kwargs):
            with self._turn:
                return attribute(*args, **kwargs)
        return in_turn

    def stream_arrow(self, *args, **kwargs):
        with self._turn:
            yield from self._store.stream_arrow(*args, **kwargs)


def test_two_runs_of_the_same_month_at_once_leave_what_one_run_leaves(october, billing_defs, instance, usage_store):
    close_month(instance, OCTOBER, definitions=billing_defs)
    before = _snapshot(october)
    month = (datetime(2026, 10, 1, tzinfo=timezone.utc), datetime(2026, 11, 1, tzinfo=timezone.utc))
    week = (datetime(2026, 10, 3, tzinfo=timezone.utc), datetime(2026, 10, 10, tzinfo=timezone.utc))

    store = TakingTurns(usage_store)

    def rollups(window):
        return lambda: roll_up_usage(store, october, *window, allow_empty_days=True).rows

    # the month twice, a week twice, the month beside a week inside it (a backfill beside a dispute's re-run)
    for calls in ([rollups(month), rollups(month)], [rollups(week), rollups(week)], [rollups(month), rollups(week)]):
        results = at_once(*calls)
        assert failures(results) == []
    for step in (rate_month, draft_month):
        for _ in range(3):
            results = at_once(lambda: step(october, OCTOBER, "run-a"), lambda: step(october, OCTOBER, "run-b"))
            assert failures(results) == [], step.__name__
    assert _snapshot(october) == before


def test_the_products_log_lines_reach_the_runs_event_log(october, billing_defs, monkeypatch):
    """With the product's dagster.yaml, the rollup's progress (a line per chunk of days: minutes
    each at a billion requests a month) is in the run's event log, shown in the UI."""
    import psycopg

    from billing_pipeline.instance import STORAGE_URL_ENV, get_instance
    from billing_pipeline.stores.postgres import database_name, with_database

    monkeypatch.setenv("DAGSTER_HOME", "")  # get_instance sets both; undone after the test
    monkeypatch.setenv(STORAGE_URL_ENV, "")
    try:
        with get_instance(october) as instance:
            result = close_month(instance, OCTOBER, definitions=billing_defs)
            messages = [e.user_message for e in instance.all_logs(result.rollup_run_id)]
        progress = [m.split(" (ClickHouse")[0] for m in messages if m.startswith("usage rolled up to")]
        assert progress == [  # seven-day chunks from 30 September to 2 November; 69 raw rows, 40 rollup rows
            "usage rolled up to 2026-10-06: 20 raw rows -> 9 rollup rows",
            "usage rolled up to 2026-10-13: 15 raw rows -> 9 rollup rows",
            "usage rolled up to 2026-10-20: 20 raw rows -> 9 rollup rows",
            "usage rolled up to 2026-10-27: 7 raw rows -> 7 rollup rows",
            "usage rolled up to 2026-11-01: 7 raw rows -> 6 rollup rows"]
    finally:
        with psycopg.connect(with_database(october, "postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database_name(october)}_dagster" WITH (FORCE)')


def test_ctrl_c_during_a_close_says_so_and_the_same_command_then_closes_the_month(october, usage_store, tmp_path):
    """Ctrl-C while the rollup waits on another run of its month (held here, so the moment is
    known): one line saying the run was interrupted and how to go on, not Dagster's error class;
    the same command then closes the month."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    import psycopg

    from billing_pipeline.stores.clickhouse import release_chdb_sessions
    from billing_pipeline.stores.postgres import lock_partitions

    release_chdb_sessions()  # the command opens the usage store (this test's, under its state dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLING_", "DAGSTER_"))}
    env.update(BILLING_DATABASE_URL=october, BILLING_STATE_DIR=str(usage_store.path).removesuffix("/chdb"))
    command = [sys.executable, "-m", "billing_pipeline.cli", "close", "--month", "2026-10"]
    with psycopg.connect(october) as other_run:
        lock_partitions(other_run, "usage_rollups", ["2026-10"])
        close = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        with psycopg.connect(october, autocommit=True) as watcher:
            while not watcher.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event = 'advisory' "
                                      "AND datname = current_database()").fetchone():
                assert close.poll() is None and time.monotonic() < deadline, close.stderr.read()
                time.sleep(0.05)
        close.send_signal(signal.SIGINT)
        stderr = close.communicate(timeout=120)[1]
        other_run.rollback()
    last = stderr.strip().splitlines()[-1]
    assert close.returncode == 2, stderr
    assert re.fullmatch(r"billing: error: usage_rollups 2026-09-30\.\.2026-11-01 interrupted in step usage_rollups "
                        r"\(run [0-9a-f-]{36}\); every step is safe to run again \(tested by killing each one\): "
                        r"run the same command again", last), stderr
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    with psycopg.connect(october) as conn:
        drafts = conn.execute("SELECT invoice_id, currency, total FROM invoices ORDER BY 1").fetchall()
    assert drafts == [("CTR-A:2026-10:v1", "USD", Decimal("0.1600")), ("CTR-B:2026-10:v1", "TRY", Decimal("30000.0000")),
                      ("CTR-C:2026-10:v1", "EUR", Decimal("500.7500")), ("CTR-D:2026-10:v1", "USD", Decimal("0.0300"))]
