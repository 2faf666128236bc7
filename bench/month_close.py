"""Benchmark: close one month at scale and compare with the bare ClickHouse aggregation.

    python bench/month_close.py --projects 10000 --orgs 2000 --chains 20 --days 31 --events 100000000

Generates the data set in the usage store (chdb unless BILLING_CLICKHOUSE_URL is set), seeds one
contract per org, then times each stage of the month close: usage_rollups (ClickHouse aggregation
+ COPY into PostgreSQL), rated_charges, invoice_drafts. It then times the rollup query alone in the
same engine and prints the ratio. Peak RSS is this process's (chdb runs in-process, so it
includes ClickHouse's memory). Uses BILLING_DATABASE_URL, else embedded PostgreSQL, in a fresh
state directory under /tmp unless BILLING_STATE_DIR is set. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

import psutil


def rss_mib() -> tuple[float, float]:
    current = psutil.Process().memory_info().rss / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return current, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--projects", type=int, default=10_000)
    parser.add_argument("--orgs", type=int, default=2_000, help="orgs = contracts")
    parser.add_argument("--chains", type=int, default=20)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--events", type=int, default=100_000_000)
    parser.add_argument("--month", default="2026-10")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="keep the usage already generated in the state dir")
    args = parser.parse_args()
    os.environ.setdefault("BILLING_STATE_DIR", tempfile.mkdtemp(prefix="billing-bench-"))

    from billing_pipeline.close import rollup_days
    from billing_pipeline.demo.seed import seed_demo_contracts
    from billing_pipeline.domain.chains import known_chains
    from billing_pipeline.demo.synthetic import UsageSpec, chain_names, generate_usage
    from billing_pipeline.domain.periods import Period
    from billing_pipeline.stores.clickhouse import ensure_schema, open_usage_store, sql_text
    from billing_pipeline.stores.postgres import billing_database_url, migrate, transaction
    from billing_pipeline.steps.invoicing import draft_month
    from billing_pipeline.steps.rating import rate_month
    from billing_pipeline.steps.usage import roll_up_usage

    period = Period.parse_month(args.month)
    if args.days != len(period.days()):
        print(f"note: --days {args.days} but {period.label} has {len(period.days())} days; using the month's days")
    # a close rolls up the month and one day on each side (customers in other timezones reach them)
    days = rollup_days(period)
    start = datetime.combine(days[0], datetime.min.time(), tzinfo=timezone.utc)
    end = datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
    month_start = datetime.combine(period.start, datetime.min.time(), tzinfo=timezone.utc)
    month_end = datetime.combine(period.end, datetime.min.time(), tzinfo=timezone.utc)

    db_url = billing_database_url()
    migrate(db_url)
    store = open_usage_store(os.environ.get("BILLING_CLICKHOUSE_URL"), os.environ.get("BILLING_CLICKHOUSE_USER"),
                             os.environ.get("BILLING_CLICKHOUSE_PASSWORD"))
    ensure_schema(store)
    print(f"engine {store.engine}; state {os.environ['BILLING_STATE_DIR']}; python {sys.version.split()[0]}")
    print(f"data set: {args.projects:,} projects, {args.orgs:,} orgs/contracts, {args.chains} chains, "
          f"{len(period.days())} days + 2 edge days, {args.events:,} requests (seed {args.seed})")

    rows_raw = None
    if not args.reuse:
        t = time.perf_counter()
        spec = UsageSpec(start=days[0], days=len(days), events=args.events, orgs=args.orgs,
                         projects=args.projects, chains=chain_names(args.chains), seed=args.seed)
        rows_raw = generate_usage(store, spec)
        gen = time.perf_counter() - t
        print(f"generate: {rows_raw:,} raw rows in {gen:.1f}s ({rows_raw / gen:,.0f} rows/s) [not part of the close]")
    with transaction(db_url) as conn:
        seed_demo_contracts(conn, args.orgs, period)

    results = []

    def stage(name, rows, seconds, unit="rows"):
        cur, peak = rss_mib()
        results.append((name, rows, seconds, cur, peak))
        print(f"{name:<28} {seconds:8.2f}s  {rows:>14,} {unit:<12} {rows / seconds if seconds else 0:>14,.0f}/s  "
              f"rss {cur:,.0f} MiB  peak {peak:,.0f} MiB", flush=True)

    t = time.perf_counter()
    summary = roll_up_usage(store, db_url, start, end)
    rollup_s = time.perf_counter() - t
    stage("usage_rollups (total)", summary.raw_rows, rollup_s, "raw rows")
    print(f"    clickhouse {summary.seconds['clickhouse']:.2f}s, postgres COPY {summary.seconds['postgres']:.2f}s, "
          f"{summary.rows:,} rollup rows, {summary.requests:,} requests, {summary.duplicate_rows:,} duplicates removed")

    t = time.perf_counter()
    rating = rate_month(db_url, period)
    stage("rated_charges", summary.rows, time.perf_counter() - t, "rollup rows")
    print(f"    {len(rating.charges):,} charges for {rating.contracts:,} contracts")

    t = time.perf_counter()
    drafted = draft_month(db_url, period)
    stage("invoice_drafts", sum(len(i.draft.lines) for i in drafted), time.perf_counter() - t, "lines")
    print(f"    {len(drafted):,} invoices")

    close_s = sum(r[2] for r in results)
    t = time.perf_counter()
    # The bare aggregation: one GROUP BY (day, org, project, chain) over the month, no dedup, no writes.
    store.query_arrow(sql_text("usage_rollups").replace("/* declared meters */", ""),
                      {"window_start": month_start, "window_end": month_end, "known_chains": list(known_chains())})
    bare_s = time.perf_counter() - t
    stage("bare ClickHouse aggregation", summary.raw_rows, bare_s, "raw rows")
    print(f"\nmonth close {close_s:.2f}s for {summary.raw_rows:,} raw rows ({summary.raw_rows / close_s:,.0f} rows/s); "
          f"bare aggregation {bare_s:.2f}s; ratio close/bare = {close_s / bare_s:.2f}x; "
          f"peak RSS {rss_mib()[1]:,.0f} MiB")


if __name__ == "__main__":
    main()
