"""Benchmark: close one month at scale, stage by stage, against the bare ClickHouse aggregation.

    BILLING_DATABASE_URL=postgresql://postgres@127.0.0.1/postgres \\
    BILLING_STATE_DIR=/work/bench-state/c10k-e100m \\
      python bench/month_close.py --contracts 10000 --events 100000000 --generate

--generate first fills the usage store in a separate process (bench/generate.py), so this process's
peak RSS is the close's own; without it the usage already in BILLING_STATE_DIR (or on
BILLING_CLICKHOUSE_URL) is closed. Each run gets a scratch billing database on the server
BILLING_DATABASE_URL names, seeded with one contract per org (the demo catalog: metered, fixed and
hybrid plans, USD/EUR/TRY, some orgs in other timezones), dropped afterwards.

Stages, as the Dagster assets run them (sinks excluded): usage_rollups (ClickHouse aggregation
streamed day by day into PostgreSQL) and its rollups_match_clickhouse check, fx_snapshot,
rated_charges, invoice_drafts, audit_snapshot (export, sign, upload to a local moto S3 with Object
Lock, read back, verify, ledger). Then the floor: one bare GROUP BY (day, org, project, chain) over
the month in the same engine, no deduplication, no writes. With --drop-usage-after-rollups the floor
is measured first, in a child process (the close's process starts cold: the floor's 12 GiB would
stay in its allocator), and the usage store is dropped once the rollups are written, so that the audit
export has its disk: 100k contracts at 1B requests fit on an 80 GB disk no other way. Peak RSS is
sampled every 20 ms per stage (chdb runs in-process, so ClickHouse's memory is included;
PostgreSQL's is not). Prints a markdown table; --json appends the figures to a file. Not a test: it
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]


class PeakRss:
    """The process's resident set, sampled in a thread; ``stage()`` resets the peak."""

    def __init__(self) -> None:
        self.process, self.peak, self.peak_at, self._stop = psutil.Process(), 0, time.perf_counter(), threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            rss = self.process.memory_info().rss
            if rss > self.peak:
                self.peak, self.peak_at = rss, time.perf_counter()

    def reset(self) -> None:
        self.peak, self.peak_at = self.process.memory_info().rss, time.perf_counter()

    def mib(self) -> float:
        return max(self.peak, self.process.memory_info().rss) / 2**20


from generate import add_data_set_arguments  # noqa: E402  (bench/ is on the path above)

FLOOR, CHECK = "bare aggregation (floor)", "rollups_match_clickhouse"
FLOOR_SQL = (
    "SELECT toDate(timestamp) AS day, org_id, project_id, chain, count() AS requests, "
    "countIf(http_status < 400) AS successful_requests, sum(bytes_out) AS bytes_out FROM requests_raw "
    "WHERE timestamp >= {window_start:DateTime64(3, 'UTC')} AND timestamp < {window_end:DateTime64(3, 'UTC')} "
    "GROUP BY day, org_id, project_id, chain "
    # in memory up to 12 GiB (9.4 GiB at 100k contracts and 100M requests); past it, spilled
    # rather than taking the machine down at 100k contracts and 1B requests
    "SETTINGS max_bytes_before_external_group_by = 12884901888")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_floor(store, month_start: datetime, month_end: datetime, keep: list | None = None) -> dict:
    """One GROUP BY (day, org, project, chain) over the month: no deduplication, no quarantine rule,
    no meters, no writes. Its rows are appended to ``keep`` if given, else let go of."""
    rss = PeakRss()
    rows = store.query_arrow(
        "SELECT count() FROM requests_raw WHERE timestamp >= {window_start:DateTime64(3, 'UTC')} "
        "AND timestamp < {window_end:DateTime64(3, 'UTC')}",
        {"window_start": month_start, "window_end": month_end}).column(0)[0].as_py()
    rss.reset()
    t = time.perf_counter()
    groups = store.query_arrow(FLOOR_SQL, {"window_start": month_start, "window_end": month_end})
    seconds = time.perf_counter() - t
    if keep is not None:
        keep.append(groups)
    del groups
    return {"stage": FLOOR, "seconds": round(seconds, 2), "peak_rss_mib": round(rss.mib()), "rows": rows,
            "unit": "raw rows"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_set_arguments(parser)
    parser.add_argument("--generate", action="store_true", help="generate the usage first (separate process)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the rollups_match_clickhouse check (not part of the close; 22 minutes at 1B requests)")
    parser.add_argument("--log-queries", action="store_true",
                        help="log each rollup query of each window as it starts (where a slow day's time went)")
    parser.add_argument("--json", help="append the figures to this file (one JSON object per line)")
    parser.add_argument("--floor-only", action="store_true", help=argparse.SUPPRESS)  # the child below
    parser.add_argument("--no-floor", action="store_true",
                        help="do not measure the floor (measured before on the same data set); no ratio printed")
    parser.add_argument("--drop-usage-after-rollups", action="store_true",
                        help="measure the floor first (in a child process, so this one starts cold), then drop "
                             "requests_raw once the rollups are written (the later stages read only PostgreSQL): "
                             "for a data set that does not fit on the disk beside its rollups and audit export "
                             "(100k contracts at 1B requests); it can be closed only once")
    args = parser.parse_args()
    if not os.environ.get("BILLING_STATE_DIR"):
        parser.error("set BILLING_STATE_DIR (chdb data, signing key)")
    if args.generate:
        subprocess.run([sys.executable, str(HERE / "generate.py"), "--contracts", str(args.contracts),
                        "--projects", str(args.projects or args.contracts), "--chains", str(args.chains),
                        "--events", str(args.events), "--month", args.month, "--seed", str(args.seed)]
                       + (["--no-merge"] if args.no_merge else []), check=True)

    from billing_pipeline.close import rollup_days
    from billing_pipeline.demo.seed import seed_demo_contracts
    from billing_pipeline.domain.audit import blob_size
    from billing_pipeline.domain.periods import Period
    from billing_pipeline.resources.audit_storage import embedded_signing_key
    from billing_pipeline.steps import audit, fx
    from billing_pipeline.steps.invoicing import draft_month
    from billing_pipeline.steps.rating import rate_month
    from billing_pipeline.steps.reconciliation import rollups_match_clickhouse
    from billing_pipeline.steps.usage import roll_up_usage
    from billing_pipeline.stores.audit_bucket import AuditBucket
    from billing_pipeline.stores.clickhouse import open_usage_store
    from billing_pipeline.stores.postgres import transaction
    from scratch_db import scratch_database

    period = Period.parse_month(args.month)
    days = rollup_days(period)
    start = datetime.combine(days[0], datetime.min.time(), tzinfo=timezone.utc)
    end = datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
    month_start = datetime.combine(period.start, datetime.min.time(), tzinfo=timezone.utc)
    month_end = datetime.combine(period.end, datetime.min.time(), tzinfo=timezone.utc)
    floor = None
    if args.drop_usage_after_rollups and not args.floor_only and not args.no_floor:
        # before this process opens chdb: one process at a time holds its directory
        same_data_set = [a for a in sys.argv[1:] if a != "--generate"]
        child = subprocess.run([sys.executable, __file__, "--floor-only", *same_data_set], check=True,
                               stdout=subprocess.PIPE, text=True)
        floor = json.loads(child.stdout.splitlines()[-1])
    store = open_usage_store(os.environ.get("BILLING_CLICKHOUSE_URL"), os.environ.get("BILLING_CLICKHOUSE_USER"),
                             os.environ.get("BILLING_CLICKHOUSE_PASSWORD"))
    if args.no_merge:
        # Loaded without merging (an hour at 1B rows): a closed month's parts were merged long ago,
        # so the close is not made to race merges a real store would have finished; it reads the
        # parts as loaded (one per 20M-request batch), which is slower than merged ones if anything.
        store.command("SYSTEM STOP MERGES requests_raw")
    if args.floor_only:
        print(json.dumps(measure_floor(store, month_start, month_end)))
        return
    logging.basicConfig(format="  %(asctime)s %(message)s", stream=sys.stdout)
    for module in ("usage", "usage_tables"):  # progress of long rollups: their queries, their writes
        logging.getLogger(f"billing_pipeline.steps.{module}").setLevel(
            logging.DEBUG if args.log_queries else logging.INFO)
    rss = PeakRss()
    results: list[dict] = []

    @contextmanager
    def stage(name: str):
        rss.reset()
        t = time.perf_counter()
        figures: dict = {}
        yield figures
        figures.update(stage=name, seconds=round(time.perf_counter() - t, 2), peak_rss_mib=round(rss.mib()),
                       peak_at_s=round(max(rss.peak_at - t, 0), 1))  # when, into the stage (the log says what ran)
        report(figures)

    def report(figures: dict) -> None:
        results.append(figures)
        rate = f"{figures['rows'] / figures['seconds']:,.0f} {figures['unit']}/s" if figures.get("rows") else ""
        print(f"{figures['stage']:<24} {figures['seconds']:8.2f}s  {figures.get('rows', 0):>14,} "
              f"{figures.get('unit', ''):<12} {rate:>22}  peak RSS {figures['peak_rss_mib']:,} MiB "
              f"{'(at +' + str(figures['peak_at_s']) + ' s)' if 'peak_at_s' in figures else ''}  "
              f"{figures.get('note', '')}", flush=True)

    if floor:
        report(floor)

    # moto in its own process: it keeps the objects in memory, which is not this process's memory
    port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    bucket = AuditBucket("bench-audit", f"http://127.0.0.1:{port}")
    for _ in range(100):
        try:
            bucket.create()
            break
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.1)
    print(f"engine {store.engine}; python {sys.version.split()[0]}; {args.contracts:,} contracts, "
          f"{args.projects or args.contracts:,} projects, {args.chains} chains, {period.label} (+2 edge days)")

    with scratch_database("bench_close") as db_url:
        with transaction(db_url) as conn:
            seed_demo_contracts(conn, args.contracts, period)
        close_start = time.perf_counter()
        with stage("usage_rollups") as f:
            summary = roll_up_usage(store, db_url, start, end)
            f.update(rows=summary.raw_rows, unit="raw rows", rollup_rows=summary.rows, requests=summary.requests,
                     duplicates=summary.duplicate_rows, source_s=round(summary.seconds["source"], 2),
                     postgres_s=round(summary.seconds["postgres"], 2),
                     note=f"{summary.rows:,} rollup rows; ClickHouse {summary.seconds['source']:.1f}s and "
                          f"PostgreSQL {summary.seconds['postgres']:.1f}s overlapped")
        check_s = drop_s = 0.0
        if not args.no_check:
            with stage(CHECK) as f:
                # an asset check: the data team's alarm, not part of the close the floor is compared to
                check_start = time.perf_counter()
                match = rollups_match_clickhouse(store, db_url, start, end, 24)
                check_s = time.perf_counter() - check_start
                f.update(rows=summary.raw_rows, unit="raw rows", note=f"passed={match.passed}")
        if args.drop_usage_after_rollups:
            # not part of the close; SYNC: an Atomic database frees a dropped table's disk minutes
            # later otherwise; and ClickHouse refuses to drop a table over 50 GB unless told to
            drop_start = time.perf_counter()
            store.command("DROP TABLE requests_raw SYNC SETTINGS max_table_size_to_drop = 0")
            drop_s = time.perf_counter() - drop_start
        with stage("fx_snapshot") as f:
            outcome = fx.snapshot_month(db_url, period, fx.FxSources("http://127.0.0.1:9", "http://127.0.0.1:9"),
                                        Decimal("0.02"))
            f.update(rows=len(outcome.outcomes), unit="currencies")
        with stage("rated_charges") as f:
            rating = rate_month(db_url, period)
            f.update(rows=summary.rows, unit="rollup rows", charges=rating.charge_count,
                     note=f"{rating.charge_count:,} charges")
        with stage("invoice_drafts") as f:
            drafted = draft_month(db_url, period)
            lines = drafted.lines
            f.update(rows=lines, unit="lines", invoices=drafted.invoices, note=f"{drafted.invoices:,} invoices")
        with stage("audit_snapshot") as f, tempfile.TemporaryDirectory(prefix="bench-audit-") as workdir:
            published = audit.publish_snapshot(db_url, period, embedded_signing_key(), bucket, Path(workdir))
            size = sum(blob_size(v) for v in published.objects.values())
            f.update(rows=size, unit="bytes", note=f"verified={published.check.ok}")
        close_s = time.perf_counter() - close_start - check_s - drop_s

    if not floor and not args.no_floor and not args.drop_usage_after_rollups:
        report(measure_floor(store, month_start, month_end))
    bare_s = next((r["seconds"] for r in results if r["stage"] == FLOOR), None)
    peak = max(r["peak_rss_mib"] for r in results if r["stage"] not in (FLOOR, CHECK))
    print(f"\nmonth close {close_s:.1f}s for {summary.raw_rows:,} raw rows ({summary.raw_rows / close_s:,.0f} rows/s); "
          + (f"floor {bare_s:.1f}s; ratio {close_s / bare_s:.2f}x; " if bare_s else "floor not measured; ")
          + (f"with the check {close_s + check_s:.1f}s"
             + (f" ({(close_s + check_s) / bare_s:.2f}x); " if bare_s else "; ") if check_s else "")
          + f"peak RSS {peak:,} MiB")
    moto.terminate()
    if args.json:
        with open(args.json, "a") as out:
            out.write(json.dumps({"contracts": args.contracts, "projects": args.projects or args.contracts,
                                  "events": args.events, "chains": args.chains, "close_s": round(close_s, 1),
                                  "check_s": round(check_s, 1), "floor_s": bare_s,
                                  "ratio": round(close_s / bare_s, 2) if bare_s else None, "peak_rss_mib": peak,
                                  "stages": results}) + "\n")


if __name__ == "__main__":
    main()
