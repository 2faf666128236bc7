"""What any month close of this design must spend at least, against the floor, on one data set.

    BILLING_DATABASE_URL=postgresql://postgres@127.0.0.1/postgres \\
    BILLING_STATE_DIR=/work/bench-state/c10k-e100m \\
      python bench/close_lower_bound.py --contracts 10000 --events 100000000 --json bounds.jsonl

The floor (bench/month_close.py) is one bare GROUP BY over the month. The close the brief asks for
cannot be only that: it must also, at the least,

- deduplicate on request_id over the month (ARCHITECTURE.md): every request key hashed once
  (``GROUP BY request_key HAVING count() > 1``, nothing read back, nothing grouped exactly);
- write the daily rollups into PostgreSQL (daily partitions, each line traceable to them): the
  floor's own rows, COPY'd as CSV into an unlogged table without an index or constraint;
- read them back once (rating and the audit export both read them): a binary COPY out.

Each is measured alone in an otherwise idle process, the cheapest way this machine knows. The
aggregation itself may be fused into the hashing (a query grouping by request key first costs at
least the hash). So no implementation of the design closes the month here in less than their sum,
or, with ClickHouse hashing while PostgreSQL writes (as the rollup overlaps them), less than the
longer of those two plus the read; rating, drafting and the audit come on top.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pyarrow.csv as pacsv

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from generate import add_data_set_arguments  # noqa: E402
from month_close import PeakRss, measure_floor  # noqa: E402

KEYS_SQL = ("SELECT count() FROM (SELECT request_key FROM requests_raw "
            "WHERE timestamp >= {window_start:DateTime64(3, 'UTC')} AND timestamp < {window_end:DateTime64(3, 'UTC')} "
            "GROUP BY request_key HAVING count() > 1) SETTINGS max_bytes_before_external_group_by = 12884901888")


def timed(rss: PeakRss, name: str, work) -> dict:
    rss.reset()
    t = time.perf_counter()
    rows = work()
    figures = {"stage": name, "seconds": round(time.perf_counter() - t, 2), "rows": rows,
               "peak_rss_mib": round(rss.mib())}
    print(f"{name:<44} {figures['seconds']:8.2f}s  {rows:>12,} rows  peak RSS {figures['peak_rss_mib']:,} MiB",
          flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_set_arguments(parser)
    parser.add_argument("--json", help="append the figures to this file (one JSON object per line)")
    args = parser.parse_args()
    from billing_pipeline.domain.periods import Period
    from billing_pipeline.stores.clickhouse import open_usage_store
    from scratch_db import scratch_database

    period = Period.parse_month(args.month)
    start = datetime.combine(period.start, datetime.min.time(), tzinfo=timezone.utc)
    end = datetime.combine(period.end, datetime.min.time(), tzinfo=timezone.utc)
    window = {"window_start": start, "window_end": end}
    store = open_usage_store(os.environ.get("BILLING_CLICKHOUSE_URL"), os.environ.get("BILLING_CLICKHOUSE_USER"),
                             os.environ.get("BILLING_CLICKHOUSE_PASSWORD"))
    if args.no_merge:
        store.command("SYSTEM STOP MERGES requests_raw")
    floor_rows: list = []  # the floor's own rows: what the write below writes
    floor = measure_floor(store, start, end, keep=floor_rows)
    print(f"{'floor: bare aggregation':<44} {floor['seconds']:8.2f}s  {floor['rows']:>12,} raw", flush=True)
    rss = PeakRss()
    keys = timed(rss, "request keys hashed once (deduplication)",
                 lambda: store.query_arrow(KEYS_SQL, window).column(0)[0].as_py())
    rollups = floor_rows.pop()
    csv = io.BytesIO()
    pacsv.write_csv(rollups, csv, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    payload, rows = csv.getvalue(), rollups.num_rows
    del rollups, csv
    with scratch_database("bench_bound") as db_url, psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE UNLOGGED TABLE rollups (day date, org_id text, project_id text, chain text, "
                     "requests bigint, successful_requests bigint, bytes_out bigint)")

        def write() -> int:
            with conn.cursor().copy("COPY rollups FROM STDIN (FORMAT csv)") as copy:
                for offset in range(0, len(payload), 8 << 20):
                    copy.write(payload[offset:offset + (8 << 20)])
            return rows

        def read() -> int:
            with conn.cursor().copy("COPY (SELECT * FROM rollups) TO STDOUT (FORMAT binary)") as copy:
                for _block in copy:  # received and dropped: the read is what is measured
                    pass
            return rows

        write_figures = timed(rss, "daily rollups COPY'd into PostgreSQL", write)
        read_figures = timed(rss, "daily rollups COPY'd out of PostgreSQL", read)
    parts = [keys, write_figures, read_figures]
    bound = sum(p["seconds"] for p in parts)
    # at best ClickHouse hashes while PostgreSQL writes the previous chunk (as the rollup does)
    overlapped = max(keys["seconds"], write_figures["seconds"]) + read_figures["seconds"]
    print(f"\nfloor {floor['seconds']:.1f}s; 2x the floor {2 * floor['seconds']:.1f}s; these three alone "
          f"{bound:.1f}s ({bound / floor['seconds']:.2f}x), {overlapped:.1f}s ({overlapped / floor['seconds']:.2f}x) "
          f"with the hashing and the write overlapped; before rating, drafting and the audit", flush=True)
    if args.json:
        with open(args.json, "a") as out:
            out.write(json.dumps({"contracts": args.contracts, "events": args.events, "floor": floor,
                                  "parts": parts, "bound_s": round(bound, 2),
                                  "overlapped_bound_s": round(overlapped, 2)}) + "\n")


if __name__ == "__main__":
    main()
