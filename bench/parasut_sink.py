"""Benchmark: the Parasut sink issuing N Turkish invoices against the local Parasut server that
enforces Parasut's limit (10 requests per 10 s), with PDFs stored in a moto S3 server.

    BILLING_DATABASE_URL=postgresql://postgres@127.0.0.1/postgres \\
        .venv/bin/python bench/parasut_sink.py --invoices 200

Half of the customers have an e-invoice inbox (e-Fatura), half do not (e-Arsiv). Prints the
requests, the achieved rate against the limit, 429 answers and invoices per minute.

With --kill-after S the sink first runs in a child process that is killed with SIGKILL after S
seconds, then resumes in this process: the figures then cover both, and every invoice must exist
exactly once in Parasut (Parasut has no idempotency keys: the sink looks up its reference first).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import psycopg

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "tests")]

from billing_pipeline.domain.parasut_invoice import vkn_is_valid  # noqa: E402
from billing_pipeline.domain.periods import Period  # noqa: E402
from billing_pipeline.sinks.parasut.client import ParasutClient, ParasutCredentials  # noqa: E402
from billing_pipeline.sinks.parasut.issuing import PollPolicy, issue_month  # noqa: E402
from billing_pipeline.stores.audit_bucket import AuditBucket  # noqa: E402
from billing_pipeline.stores.plans import sync_plans  # noqa: E402
from month_fixture import TEST_PLANS  # noqa: E402
from scratch_db import scratch_database  # noqa: E402
from parasut_server import ParasutServer  # noqa: E402


def vkn(i: int) -> str:
    """The i-th customer's tax number, with its check digit: the sink refuses any other before a call."""
    return next(n for n in (f"{700000000 + i:09d}{d}" for d in range(10)) if vkn_is_valid(n))


def seed(url: str, invoices: int) -> None:
    lines = [("ETH Mainnet - 1,200,000 requests", Decimal("4321.10")), ("BSC Mainnet - 300,000 requests",
                                                                        Decimal("987.65"))]
    subtotal = sum(a for _, a in lines)
    vat = [(a * Decimal("0.20")).quantize(Decimal("0.01")) for _, a in lines]
    with psycopg.connect(url) as conn:
        sync_plans(conn, TEST_PLANS)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO customers (org_id, legal_name, country, tax_id) VALUES (%s, %s, 'TR', %s)",
                            [(f"org_{i:04d}", f"Musteri {i} A.S.", vkn(i)) for i in range(invoices)])
            cur.executemany("""INSERT INTO contracts (contract_id, org_id, plan_id, contract_type, currency, region,
                                   start_at) VALUES (%s, %s, 'pro_test', 'METERED', 'TRY', 'TR', '2026-01-01')""",
                            [(f"CTR-{i:04d}", f"org_{i:04d}") for i in range(invoices)])
            cur.executemany(
                """INSERT INTO invoices (invoice_id, contract_id, org_id, period_start, period_end, version, status,
                       currency, subtotal, tax_rate, tax, total, issue_date)
                   VALUES (%s, %s, %s, '2026-10-01', '2026-11-01', 1, 'DRAFT', 'TRY', %s, 0.20, %s, %s, '2026-11-01')""",
                [(f"CTR-{i:04d}:2026-10:v1", f"CTR-{i:04d}", f"org_{i:04d}", subtotal, sum(vat), subtotal + sum(vat))
                 for i in range(invoices)])
            cur.executemany(
                """INSERT INTO invoice_lines (invoice_id, line_no, charge_id, description, quantity, unit_price, amount,
                       currency, vat_rate, vat_amount) VALUES (%s, %s, %s, %s, 1, %s, %s, 'TRY', 0.20, %s)""",
                [(f"CTR-{i:04d}:2026-10:v1", n, f"c{i}-{n}", d, a, a, v)
                 for i in range(invoices) for n, ((d, a), v) in enumerate(zip(lines, vat), start=1)])


def _issue(url: str, server_url: str, s3_url: str, limit: int, window: float, workers: int) -> None:
    client = ParasutClient(ParasutCredentials(server_url, "1234", "cid", "csecret", "api@example.test", "pw"),
                           url, requests_per_window=limit, window_seconds=window)
    issue_month(url, client, Period.parse_month("2026-10"), storage=AuditBucket("bench-docs", s3_url),
                workers=workers, polls=PollPolicy(job_polls=20, pdf_polls=20, interval=1.0))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invoices", type=int, default=200)
    parser.add_argument("--limit", type=int, default=10, help="requests per window (Parasut: 10)")
    parser.add_argument("--window", type=float, default=10.0, help="seconds (Parasut: 10)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kill-after", type=float, help="kill -9 a first attempt after this many seconds, then resume")
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    host, port = s3.get_host_and_port()
    storage = AuditBucket("bench-docs", f"http://{host}:{port}")
    storage.create()

    with scratch_database("bench_parasut") as url:
        seed(url, args.invoices)
        with ParasutServer(rate_limit=args.limit, rate_window=args.window) as server:
            for i in range(0, args.invoices, 2):
                server.parasut.inboxes[vkn(i)] = [f"urn:mail:defaultpk@musteri{i}.test"]
            client = ParasutClient(ParasutCredentials(server.url, "1234", "cid", "csecret", "api@example.test", "pw"),
                                   url, requests_per_window=args.limit, window_seconds=args.window)
            started = time.monotonic()
            if args.kill_after:
                child = multiprocessing.get_context("spawn").Process(target=_issue, args=(
                    url, server.url, f"http://{host}:{port}", args.limit, args.window, args.workers))
                child.start()
                child.join(args.kill_after)
                os.kill(child.pid, signal.SIGKILL)
                child.join()
                print(f"first attempt        killed after {args.kill_after:g} s (exit {child.exitcode}), "
                      f"{len(server.parasut.state.sales_invoices):,} sales invoices, "
                      f"{len(server.parasut.requests):,} requests; resuming")
            result = issue_month(url, client, Period.parse_month("2026-10"), storage=storage, workers=args.workers,
                                 polls=PollPolicy(job_polls=20, pdf_polls=20, interval=1.0))
            seconds = time.monotonic() - started
            issued = result.by_status("ISSUED")
            seen = len(server.parasut.requests)
            refs = Counter(inv["attributes"]["description"].split("Ref: ")[1].split(" |")[0]
                           for inv in server.parasut.state.sales_invoices.values())
            with psycopg.connect(url) as conn:
                done = conn.execute("SELECT count(*) FROM invoices WHERE status = 'ISSUED'").fetchone()[0]
            print(f"issued in total      {done:,} of {args.invoices:,}; {len(refs):,} sales invoices in Parasut, "
                  f"{sum(n - 1 for n in refs.values())} duplicates")
            limit_rate = args.limit / args.window
            print(f"invoices issued      {len(issued):,} of {args.invoices:,} "
                  f"({sum(o.kind == 'E_FATURA' for o in issued)} e-Fatura, {sum(o.kind == 'E_ARSIV' for o in issued)} "
                  f"e-Arsiv), PDFs stored {result.pdfs_fetched}")
            print(f"requests             {client.calls:,} by the client, {seen:,} seen by the server "
                  f"({seen / max(1, done):.1f} per invoice)")
            print(f"wall time            {seconds:.1f} s")
            print(f"requests per second  {seen / seconds:.3f} against a limit of {limit_rate:g} "
                  f"({seen / seconds / limit_rate:.1%})")
            print(f"429 answers          {server.parasut.rate_limited}")
            print(f"invoices per minute  {done / seconds * 60:.2f}")
            with psycopg.connect(url) as conn:  # a refusal is a failed benchmark, not a faster one
                refused = conn.execute("SELECT invoice_id, sink_error FROM invoices WHERE status <> 'ISSUED' "
                                       "ORDER BY 1").fetchall()
        s3.stop()
    if refused:
        sys.exit(f"{len(refused)} invoice(s) not issued, the first: {refused[0][0]}: {refused[0][1]}")


if __name__ == "__main__":
    main()
