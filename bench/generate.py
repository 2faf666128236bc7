"""Generate a benchmark month of synthetic gateway usage into the usage store, once.

    BILLING_STATE_DIR=/work/bench-state/c10k-e100m python bench/generate.py --contracts 10000 --events 100000000

Runs in its own process so that the month close measured afterwards (bench/month_close.py --reuse,
same BILLING_STATE_DIR) starts with a cold process: its peak RSS is the close's, not the generator's.
Writes the month and one day on each side, like a close reads. chdb unless BILLING_CLICKHOUSE_URL is set.
"""

from __future__ import annotations

import argparse
import os
import time


def add_data_set_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--contracts", type=int, default=10_000, help="orgs, one contract each")
    parser.add_argument("--projects", type=int, help="default: one per contract")
    parser.add_argument("--chains", type=int, default=20)
    parser.add_argument("--events", type=int, default=100_000_000)
    parser.add_argument("--month", default="2026-10")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-merge", action="store_true",
                        help="skip OPTIMIZE FINAL (at 1B rows it rewrites about 40 GB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_set_arguments(parser)
    args = parser.parse_args()
    if not os.environ.get("BILLING_STATE_DIR") and not os.environ.get("BILLING_CLICKHOUSE_URL"):
        parser.error("set BILLING_STATE_DIR (the chdb data goes there) or BILLING_CLICKHOUSE_URL")

    from billing_pipeline.close import rollup_days
    from billing_pipeline.demo.synthetic import UsageSpec, chain_names, generate_usage
    from billing_pipeline.domain.periods import Period
    from billing_pipeline.stores.clickhouse import ensure_schema, open_usage_store

    days = rollup_days(Period.parse_month(args.month))
    store = open_usage_store(os.environ.get("BILLING_CLICKHOUSE_URL"), os.environ.get("BILLING_CLICKHOUSE_USER"),
                             os.environ.get("BILLING_CLICKHOUSE_PASSWORD"))
    spec = UsageSpec(start=days[0], days=len(days), events=args.events, orgs=args.contracts,
                     projects=args.projects or args.contracts, chains=chain_names(args.chains), seed=args.seed)
    if args.no_merge:
        # the parts stay as loaded, one per 20M-request batch: merging them would not finish before
        # the load does, and would only slow it
        ensure_schema(store)
        store.command("SYSTEM STOP MERGES requests_raw")
    t = time.perf_counter()
    rows = generate_usage(store, spec)
    seconds = time.perf_counter() - t
    # A closed month's parts were merged long ago; merge these now, so the close is measured on
    # settled data rather than racing the background merges of a fresh load.
    if not args.no_merge:
        t_merge = time.perf_counter()
        store.command("OPTIMIZE TABLE requests_raw FINAL")
        print(f"merged the parts in {time.perf_counter() - t_merge:.1f}s", flush=True)
    print(f"generated {rows:,} raw rows ({args.events:,} requests, {spec.orgs:,} orgs, {spec.projects:,} projects, "
          f"{args.chains} chains, {len(days)} days) in {seconds:.1f}s ({rows / seconds:,.0f} rows/s)", flush=True)


if __name__ == "__main__":
    main()
