"""Benchmark: the Stripe sink issuing N invoices against a local Stripe server that enforces the
rate limit (a token bucket, like Stripe's) and answers after a simulated network latency.

    BILLING_DATABASE_URL=postgresql://postgres@127.0.0.1/postgres \\
        .venv/bin/python bench/stripe_sink.py --invoices 1000 --rate 25 --latency 0.08

Prints the calls, the achieved calls/s against the configured limit, 429 answers, invoices per
minute and peak RSS. The database named by the URL is used as an admin connection: a fresh
database is created for the run and dropped after.
"""

from __future__ import annotations

import argparse
import sys
import time
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invoices", type=int, default=1000)
    parser.add_argument("--lines", type=int, default=5, help="lines per invoice")
    parser.add_argument("--orgs", type=int, default=400)
    parser.add_argument("--rate", type=float, default=25, help="the limit: Stripe test mode 25, live 100")
    parser.add_argument("--latency", type=float, default=0.08, help="simulated network round trip, seconds")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    with scratch_database("bench_stripe") as url:
        seed(url, args.invoices, args.lines, args.orgs)
        with StripeServer(rate_limit=args.rate, latency=args.latency) as server:
            gateway = StripeGateway("sk_test_bench", server.url, args.rate)
            started = time.monotonic()
            result = issue_month(url, gateway, Period.parse_month("2026-10"), concurrency=args.concurrency)
            seconds = time.monotonic() - started
            issued = len(result.by_status("ISSUED"))
            finalized = sum(1 for i in server.stripe.state.invoices.values() if i["status"] == "open")
            rss = psutil.Process().memory_info().rss / 2**20
            print(f"invoices issued      {issued:,} of {args.invoices:,} ({finalized:,} finalized in Stripe)")
            print(f"lines per invoice    {args.lines}, orgs {args.orgs:,}, concurrency {args.concurrency}, "
                  f"latency {args.latency * 1000:.0f} ms")
            print(f"Stripe calls         {gateway.calls:,} ({len(server.stripe.requests):,} seen by the server)")
            print(f"wall time            {seconds:.1f} s")
            print(f"calls per second     {gateway.calls / seconds:.2f} against a limit of {args.rate:g} "
                  f"({gateway.calls / seconds / args.rate:.1%})")
            print(f"429 answers          {server.stripe.rate_limited} (retried: {gateway.retried})")
            print(f"invoices per minute  {issued / seconds * 60:,.0f}")
            print(f"peak RSS             {rss:,.0f} MiB (process, includes the local server)")


if __name__ == "__main__":
    main()
