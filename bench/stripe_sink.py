"""Benchmark: the Stripe sink issuing N invoices against a local Stripe server that enforces the
rate limit (a token bucket, like Stripe's) and answers after a simulated network latency.

    BILLING_DATABASE_URL=postgresql://postgres@127.0.0.1/postgres \\
        .venv/bin/python bench/stripe_sink.py --invoices 1000 --rate 25 --latency 0.08

Prints the calls, the achieved calls/s against the configured limit, 429 answers, invoices per
minute and peak RSS. The database named by the URL is used as an admin connection: a fresh
database is created for the run and dropped after.

With --kill-after S the sink first runs in a child process that is killed with SIGKILL after S
seconds, then resumes in this process: the figures then cover both, and every invoice must be
finalized exactly once in Stripe.
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

import psutil
import psycopg

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "tests")]

from billing_pipeline.domain.periods import Period  # noqa: E402
from billing_pipeline.sinks.stripe.gateway import StripeGateway  # noqa: E402
from billing_pipeline.sinks.stripe.issuing import issue_month  # noqa: E402
from billing_pipeline.stores.plans import sync_plans  # noqa: E402
from month_fixture import TEST_PLANS  # noqa: E402
from scratch_db import scratch_database  # noqa: E402
from stripe_server import StripeServer  # noqa: E402


def seed(url: str, invoices: int, lines: int, orgs: int) -> None:
    with psycopg.connect(url) as conn:
        sync_plans(conn, TEST_PLANS)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO customers (org_id, legal_name, country) VALUES (%s, %s, 'US')",
                            [(f"org_{o:05d}", f"Org {o}") for o in range(orgs)])
            cur.executemany(
                """INSERT INTO contracts (contract_id, org_id, plan_id, contract_type, currency, region, start_at)
                   VALUES (%s, %s, 'pro_test', 'METERED', 'USD', 'GLOBAL', '2026-01-01')""",
                [(f"CTR-{i:05d}", f"org_{i % orgs:05d}") for i in range(invoices)])
            amounts = [Decimal(f"{(n * 7919) % 100000 / 100:.2f}") for n in range(1, lines + 1)]
            subtotal = sum(amounts)
            cur.executemany(
                """INSERT INTO invoices (invoice_id, contract_id, org_id, period_start, period_end, version, status,
                       currency, subtotal, tax_rate, tax, total)
                   VALUES (%s, %s, %s, '2026-10-01', '2026-11-01', 1, 'DRAFT', 'USD', %s, 0, 0, %s)""",
                [(f"CTR-{i:05d}:2026-10:v1", f"CTR-{i:05d}", f"org_{i % orgs:05d}", subtotal, subtotal)
                 for i in range(invoices)])
            cur.executemany(
                """INSERT INTO invoice_lines (invoice_id, line_no, charge_id, description, quantity, unit_price,
                       amount, currency) VALUES (%s, %s, %s, %s, 1, %s, %s, 'USD')""",
                [(f"CTR-{i:05d}:2026-10:v1", n, f"c{i}-{n}", f"Chain {n} - requests", a, a)
                 for i in range(invoices) for n, a in enumerate(amounts, start=1)])


def _issue(url: str, server_url: str, rate: float, concurrency: int) -> None:
    issue_month(url, StripeGateway("sk_test_bench", server_url, rate), Period.parse_month("2026-10"),
                concurrency=concurrency)


def killed_after(seconds: float, *args) -> int:
    """The sink in a child process, SIGKILLed after ``seconds``; returns the child's exit code."""
    child = multiprocessing.get_context("spawn").Process(target=_issue, args=args)
    child.start()
    child.join(seconds)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    return child.exitcode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invoices", type=int, default=1000)
    parser.add_argument("--lines", type=int, default=5, help="lines per invoice")
    parser.add_argument("--orgs", type=int, default=400)
    parser.add_argument("--rate", type=float, default=25, help="the limit: Stripe test mode 25, live 100")
    parser.add_argument("--latency", type=float, default=0.08, help="simulated network round trip, seconds")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--kill-after", type=float, help="kill -9 a first attempt after this many seconds, then resume")
    args = parser.parse_args()

    with scratch_database("bench_stripe") as url:
        seed(url, args.invoices, args.lines, args.orgs)
        with StripeServer(rate_limit=args.rate, latency=args.latency) as server:
            gateway = StripeGateway("sk_test_bench", server.url, args.rate)
            started = time.monotonic()
            if args.kill_after:
                code = killed_after(args.kill_after, url, server.url, args.rate, args.concurrency)
                before = sum(1 for i in server.stripe.state.invoices.values() if i["status"] == "open")
                print(f"first attempt        killed after {args.kill_after:g} s (exit {code}), {before:,} invoices "
                      f"finalized, {len(server.stripe.requests):,} calls; resuming")
            result = issue_month(url, gateway, Period.parse_month("2026-10"), concurrency=args.concurrency)
            seconds = time.monotonic() - started
            with psycopg.connect(url) as conn:
                issued = conn.execute("SELECT count(*) FROM invoices WHERE status = 'ISSUED'").fetchone()[0]
            per_invoice = Counter(i["metadata"]["invoice_id"] for i in server.stripe.state.invoices.values())
            finalized = sum(1 for i in server.stripe.state.invoices.values() if i["status"] == "open")
            rss = psutil.Process().memory_info().rss / 2**20
            print(f"invoices issued      {issued:,} of {args.invoices:,} ({finalized:,} finalized in Stripe, "
                  f"{sum(n - 1 for n in per_invoice.values())} duplicates, {len(result.by_status('FAILED'))} failed)")
            print(f"lines per invoice    {args.lines}, orgs {args.orgs:,}, concurrency {args.concurrency}, "
                  f"latency {args.latency * 1000:.0f} ms")
            calls = len(server.stripe.requests)
            print(f"Stripe calls         {calls:,} seen by the server ({gateway.calls:,} by this process)")
            print(f"wall time            {seconds:.1f} s")
            print(f"calls per second     {calls / seconds:.2f} against a limit of {args.rate:g} "
                  f"({calls / seconds / args.rate:.1%})")
            print(f"429 answers          {server.stripe.rate_limited} (retried: {gateway.retried})")
            print(f"invoices per minute  {issued / seconds * 60:,.0f}")
            print(f"peak RSS             {rss:,.0f} MiB (process, includes the local server)")


if __name__ == "__main__":
    main()
