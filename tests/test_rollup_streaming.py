"""The rollup streams its window in chunks of days: same rows as day by day, in bounded memory."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from billing_pipeline.steps.usage import chunks, prefetched, roll_up_usage

UTC = timezone.utc


def test_a_month_is_cut_into_chunks_of_four_days():
    windows = chunks(datetime(2026, 9, 30, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))
    assert [(a.date().isoformat(), b.date().isoformat()) for a, b in windows] == [
        ("2026-09-30", "2026-10-04"), ("2026-10-04", "2026-10-08"), ("2026-10-08", "2026-10-12"),
        ("2026-10-12", "2026-10-16"), ("2026-10-16", "2026-10-20"), ("2026-10-20", "2026-10-24"),
        ("2026-10-24", "2026-10-28"), ("2026-10-28", "2026-11-01"), ("2026-11-01", "2026-11-02")]
    assert chunks(datetime(2026, 10, 5, 12, tzinfo=UTC), datetime(2026, 10, 6, tzinfo=UTC)) == [
        (datetime(2026, 10, 5, 12, tzinfo=UTC), datetime(2026, 10, 6, tzinfo=UTC))]


def test_prefetched_keeps_the_order_and_raises_the_workers_error():
    assert list(prefetched(lambda x: x * 10, [1, 2, 3])) == [10, 20, 30]
    assert list(prefetched(lambda x: x, [])) == []

    def work(x):
        if x == 2:
            raise ValueError("day 2 failed")
        return x

    results = prefetched(work, [1, 2, 3])
    assert next(results) == 1
    with pytest.raises(ValueError, match="day 2 failed"):
        next(results)


def _rollups(db_url: str) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT * FROM usage_rollups ORDER BY day, org_id, project_id, chain").fetchall() + \
            conn.execute("SELECT day, raw_rows, duplicate_rows, quarantined_rows, requests, bytes_out "
                         "FROM usage_rollup_days ORDER BY day").fetchall()


def test_a_month_in_chunks_equals_its_days_one_by_one(october, usage_store):
    start, end = datetime(2026, 9, 30, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    month = roll_up_usage(usage_store, october, start, end, allow_empty_days=True)
    in_chunks = _rollups(october)
    day = start
    while day < end:
        roll_up_usage(usage_store, october, day, day + timedelta(days=1), allow_empty_days=True)
        day += timedelta(days=1)
    assert _rollups(october) == in_chunks
    assert (month.requests, month.duplicate_rows, month.rows, len(month.days)) == (63, 4, 40, 33)
