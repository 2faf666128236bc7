"""How usage_rollups streams a window: cut into chunks of days within memory bounds, the next
chunk aggregated by ClickHouse while PostgreSQL takes in the current one."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from typing import Callable, Iterator, TypeVar

import pyarrow as pa

from ..stores.clickhouse import UsageStore


def days_between(start: date, end: date) -> list[date]:
    """The days of [start, end)."""
    return [start + timedelta(days=i) for i in range((end - start).days)]


# Bounds on what ClickHouse aggregates per query. Rollup rows are held in Arrow, two chunks in
# flight (100k contracts on 20 chains make about 1.2 M a day); raw rows set the size of ClickHouse's
# hash tables for the copies and the reconciliation check. A day alone may exceed them: days are
# never split. Bigger chunks spread the 24 h read before each chunk (for copies of its requests) and
# each query's fixed cost over more days: 10k contracts' 100M requests (3 M raw rows a day) rolled
# up in 63.7 s and 965 MiB in three-day chunks (10 M), 54.7 s and 1,165 MiB in five (16 M), 49.0 s
# and 1,266 MiB in six (20 M), 47.4 s and 1,447 MiB in seven (25 M; bench/rollup_profile.py).
MAX_CHUNK_ROLLUP_ROWS = 1_500_000
MAX_CHUNK_RAW_ROWS = 20_000_000
MAX_CHUNK_DAYS = 7


def window_is_oversized(window_source: list[dict]) -> bool:
    """Whether a window is past the bounds (a day bigger than them on its own: 30 M raw rows and
    2 M rollup rows at 1B requests and 100k contracts). Two windows within them fit in memory side
    by side, so ClickHouse works on one while PostgreSQL takes in the one before; a window past
    them runs its big queries only once the previous one is written and its memory given back."""
    return (sum(d["raw_rows"] for d in window_source) > MAX_CHUNK_RAW_ROWS
            or sum(d.get("rollup_keys", 0) for d in window_source) > MAX_CHUNK_ROLLUP_ROWS)


def plan_chunks(start: datetime, end: datetime, source: list[dict]) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at UTC midnights into windows of consecutive days, each as long as it stays
    within the bounds above (by the day's ``rollup_keys`` and ``raw_rows`` in ``source``)."""
    size = {row["day"]: (row.get("rollup_keys", 0), row["raw_rows"]) for row in source}
    windows: list[tuple[datetime, datetime]] = []
    first, keys, raw, days = start, 0, 0, 0
    for day in days_between(start.date(), end.date()):
        day_keys, day_raw = size.get(day, (0, 0))
        if days and (keys + day_keys > MAX_CHUNK_ROLLUP_ROWS or raw + day_raw > MAX_CHUNK_RAW_ROWS
                     or days == MAX_CHUNK_DAYS):
            midnight = datetime.combine(day, datetime.min.time(), tzinfo=start.tzinfo)
            windows.append((first, midnight))
            first, keys, raw, days = midnight, 0, 0, 0
        keys, raw, days = keys + day_keys, raw + day_raw, days + 1
    if first < end:
        windows.append((first, end))
    return windows


def give_back_memory(store: UsageStore) -> None:
    """Return what was freed to the operating system, so that the next query does not come on top
    of it. Both allocators keep freed memory for reuse: ClickHouse's kept about 600 MB after a
    1B-request day's deliveries query at 100k contracts, Arrow's about 700 MB after their
    subtraction (its unused pages go back per thread, those freed by another thread included:
    call it in the thread that allocated)."""
    store.release_memory()
    pa.default_memory_pool().release_unused()


T = TypeVar("T")
R = TypeVar("R")


def prefetched(work: Callable[[T, threading.Event], R], items: list[T]) -> Iterator[R]:
    """work(item, released) for each item in order, the next one computed in a worker thread while
    the caller consumes the current one (ClickHouse aggregates chunk N+1 while PostgreSQL copies
    chunk N). ``released`` is set once the caller is done with the previous result and has let go
    of it, for work that needs its memory back before a big step."""
    if not items:
        return
    released = threading.Event()
    released.set()  # nothing held before the first
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollup-prefetch") as pool:
        pending = pool.submit(work, items[0], released)
        for following in items[1:] + [None]:
            current = pending.result()
            released = threading.Event()
            pending = pool.submit(work, following, released) if following is not None else None
            try:
                yield current
            except GeneratorExit:
                if pending is not None:
                    pending.cancel()
                raise
            finally:
                del current
                released.set()  # (also when the caller stops early: the worker must not wait forever)
