"""Profile the rollup's memory on a few days at a month's density, without generating the month.

    BILLING_DATABASE_URL=postgresql://postgres@127.0.0.1/postgres \\
    BILLING_STATE_DIR=/work/bench-state/profile \\
      python bench/rollup_profile.py --contracts 100000 --events 1000000000 --generate

--generate writes the profiled days and one day on each side (their lookback and the copies sent
across midnight), at the density of --events requests a month, in --parts parts a day, as the full
data set lies (50 parts a day at 1B requests). Then a fresh process rolls up the days
(--first-day, --days) into a scratch database seeded with one contract per org, sampling its
resident set and Arrow's pool every 20 ms, and prints the peak, where it fell among the rollup's
log lines, and the samples around it. A tool for finding what the rollup holds at its peak: a
full month at 1B requests takes 45 minutes to generate and roll up, three days five.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]


def generate(args: argparse.Namespace) -> None:
    from billing_pipeline.demo import synthetic
    from billing_pipeline.stores.clickhouse import ensure_schema, open_usage_store

    days = args.days + 2
    events = args.events * days // 33  # the month's density: October and a day on each side
    store = open_usage_store()
    ensure_schema(store)
    store.command("SYSTEM STOP MERGES requests_raw")
    synthetic._BATCH_EVENTS = -(-events // args.parts)  # each batch spans every day: a part a day each
    spec = synthetic.UsageSpec(start=args.first_day - timedelta(days=1), days=days, events=events,
                               orgs=args.contracts, projects=args.contracts,
                               chains=synthetic.chain_names(20), seed=7)
    t = time.perf_counter()
    rows = synthetic.generate_usage(store, spec)
    print(f"generated {rows:,} raw rows over {days} days in {time.perf_counter() - t:.1f}s", flush=True)


class Sampler:
    """RSS and Arrow's allocated bytes every 20 ms, with the time of each."""

    def __init__(self) -> None:
        import pyarrow as pa

        self.samples: list[tuple[float, int, int]] = []
        self._pa, self._process, self._stop = pa, psutil.Process(), threading.Event()
        self.t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.samples.append((time.perf_counter() - self.t0, self._process.memory_info().rss,
                                 self._pa.total_allocated_bytes()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class TimedLog(logging.Handler):
    def __init__(self, t0: float) -> None:
        super().__init__()
        self.t0, self.lines = t0, []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((time.perf_counter() - self.t0, record.threadName, record.getMessage()))


def profile(args: argparse.Namespace) -> None:
    # what bench/month_close.py imports (Dagster among them, as in a run worker): the same base
    for module in ("month_close", "billing_pipeline.close", "billing_pipeline.resources.audit_storage",
                   "billing_pipeline.steps.audit", "billing_pipeline.steps.fx", "billing_pipeline.steps.invoicing",
                   "billing_pipeline.steps.rating", "billing_pipeline.steps.reconciliation",
                   "billing_pipeline.stores.audit_bucket"):
        importlib.import_module(module)
    from billing_pipeline.demo.seed import seed_demo_contracts
    from billing_pipeline.domain.periods import Period
    from billing_pipeline.steps import usage_copies
    from billing_pipeline.steps.usage import roll_up_usage
    from billing_pipeline.stores.clickhouse import open_usage_store
    from billing_pipeline.stores.postgres import transaction
    from scratch_db import scratch_database

    if args.keys_per_pass:
        usage_copies.COPY_KEYS_PER_PASS = args.keys_per_pass
    store = open_usage_store()
    store.command("SYSTEM STOP MERGES requests_raw")
    start = datetime.combine(args.first_day, datetime.min.time(), tzinfo=timezone.utc)
    end = start + timedelta(days=args.days)
    with scratch_database("profile") as db_url:
        with transaction(db_url) as conn:
            seed_demo_contracts(conn, args.contracts, Period.parse_month(f"{args.first_day:%Y-%m}"))
        mib = psutil.Process().memory_info().rss / 2**20
        sampler = Sampler()
        log = TimedLog(sampler.t0)
        logging.getLogger("billing_pipeline").addHandler(log)
        logging.getLogger("billing_pipeline").setLevel(logging.DEBUG)
        summary = roll_up_usage(store, db_url, start, end)
        sampler.stop()
    wall = time.perf_counter() - sampler.t0
    t_peak, rss_peak, arrow_at_peak = max(sampler.samples, key=lambda s: s[1])
    arrow_peak = max(s[2] for s in sampler.samples)
    print(f"{args.days} days from {args.first_day}: {summary.raw_rows:,} raw rows -> {summary.rows:,} rollup rows "
          f"in {wall:.1f}s (ClickHouse {summary.seconds['source']:.1f}s, PostgreSQL {summary.seconds['postgres']:.1f}s)")
    print(f"RSS before {mib:,.0f} MiB; peak {rss_peak / 2**20:,.0f} MiB at +{t_peak:.2f}s, "
          f"Arrow then {arrow_at_peak / 2**20:,.0f} MiB (Arrow's own peak {arrow_peak / 2**20:,.0f} MiB)")
    for t, thread, message in log.lines:
        print(f"  +{t:8.2f}s {thread:<20} {message}")
    print("each second's highest sample (t, RSS MiB, Arrow MiB):")
    seconds: dict[int, tuple[float, int, int]] = {}
    for sample in sampler.samples:
        seconds[int(sample[0])] = max(seconds.get(int(sample[0]), sample), sample, key=lambda s: s[1])
    for t, rss, arrow in seconds.values():
        print(f"  {t:9.2f}s {rss / 2**20:8,.0f} {arrow / 2**20:8,.0f}")
    print("samples around the peak (t, RSS MiB, Arrow MiB):")
    for t, rss, arrow in sampler.samples:
        if abs(t - t_peak) <= args.window:
            print(f"  +{t:8.2f}s {rss / 2**20:8,.0f} {arrow / 2**20:8,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contracts", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000_000, help="requests a month (the density)")
    parser.add_argument("--first-day", type=date.fromisoformat, default=date(2026, 10, 4))
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--parts", type=int, default=50, help="parts each day lies in")
    parser.add_argument("--generate", action="store_true", help="generate the days first (separate process)")
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keys-per-pass", type=int,
                        help="request keys one copy-candidate pass may hash (COPY_KEYS_PER_PASS in steps/usage_copies.py)")
    parser.add_argument("--window", type=float, default=1.0, help="seconds of samples shown each side of the peak")
    args = parser.parse_args()
    if not os.environ.get("BILLING_STATE_DIR"):
        parser.error("set BILLING_STATE_DIR (the chdb data goes there)")
    if args.generate_only:
        return generate(args)
    if args.generate:
        argv = [a for a in sys.argv[1:] if a != "--generate"]
        subprocess.run([sys.executable, __file__, "--generate-only", *argv], check=True)
    profile(args)


if __name__ == "__main__":
    main()
