"""Benchmark: rate a month of 5M usage_rollups rows (rated_charges and invoice_drafts only).

    python bench/rating.py --orgs 2000 --projects-per-org 4 --chains 20

Writes synthetic rollups straight into PostgreSQL (generate_series, no ClickHouse), seeds one
contract per org on the catalog plans (some in other timezones, so the per-day path is measured
too), then times rate_month and draft_month and prints rows/s and this process's peak RSS.
Uses BILLING_DATABASE_URL, else embedded PostgreSQL. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from datetime import timedelta

from psycopg import sql


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orgs", type=int, default=2000)
    parser.add_argument("--projects-per-org", type=int, default=4)
    parser.add_argument("--chains", type=int, default=20)
    parser.add_argument("--month", default="2026-10")
    args = parser.parse_args()
    os.environ.setdefault("BILLING_STATE_DIR", tempfile.mkdtemp(prefix="billing-rating-bench-"))

    from billing_pipeline.close import rollup_days
    from billing_pipeline.demo.seed import seed_demo_contracts
    from billing_pipeline.demo.synthetic import chain_names
    from billing_pipeline.domain.periods import Period
    from billing_pipeline.steps.invoicing import draft_month
    from billing_pipeline.steps.rating import rate_month
    from billing_pipeline.steps.usage_tables import add_meter_columns, clear_rollups
    from billing_pipeline.stores.meter_sql import MeterSet
    from billing_pipeline.stores.postgres import billing_database_url, migrate, transaction

    period = Period.parse_month(args.month)
    days = rollup_days(period)
    db_url = billing_database_url()
    migrate(db_url)
    meters = MeterSet.load()
    t = time.perf_counter()
    with transaction(db_url) as conn:
        seed_demo_contracts(conn, args.orgs, period)
        add_meter_columns(conn, meters)
        clear_rollups(conn, days[0], days[-1] + timedelta(days=1))
        conn.execute("DELETE FROM usage_rollup_days WHERE day >= %s AND day <= %s", (days[0], days[-1]))
        # requests skewed by org (a few heavy ones), successful ~98%, bytes ~600 per request, CU ~20
        conn.execute(sql.SQL("""
            INSERT INTO usage_rollups (day, org_id, project_id, chain, requests, successful_requests, error_requests,
                                       bytes_out, meter_requests, meter_successful_requests, meter_egress_bytes,
                                       meter_compute_units)
            SELECT d::date, 'org_' || lpad(o::text, 4, '0'), 'prj_' || lpad(o::text, 4, '0') || '_' || p, ch,
                   n, n - n / 50, n / 50, n * 600, n, n - n / 50, n * 600, n * 20
            FROM generate_series(%(first)s::date, %(last)s::date, interval '1 day') d,
                 generate_series(0, %(orgs)s - 1) o, generate_series(1, %(ppo)s) p, unnest(%(chains)s::text[]) ch,
                 LATERAL (SELECT 1 + abs(hashtext(o::text || p::text || ch || d::text)) %% (200000 / (o + 1)) AS n) v
        """), {"first": days[0], "last": days[-1], "orgs": args.orgs, "ppo": args.projects_per_org,
               "chains": list(chain_names(args.chains))})
        conn.execute("""INSERT INTO usage_rollup_days (day, raw_rows, duplicate_rows, quarantined_rows, requests,
                            bytes_out, source_engine, source_query_sha256)
                        SELECT day, sum(requests), 0, 0, sum(requests), sum(bytes_out), 'bench', repeat('0', 64)
                        FROM usage_rollups WHERE day >= %s AND day <= %s GROUP BY day""", (days[0], days[-1]))
        conn.execute("ANALYZE usage_rollups")
        rows = conn.execute("SELECT count(*) FROM usage_rollups WHERE day >= %s AND day < %s",
                            (period.start, period.end)).fetchone()[0]
    print(f"setup: {rows:,} rollup rows in {period.label} for {args.orgs:,} contracts in {time.perf_counter() - t:.1f}s")

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    rating = rate_month(db_url, period, meters=meters)
    rate_s = time.perf_counter() - t
    t = time.perf_counter()
    drafted = draft_month(db_url, period)
    draft_s = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = drafted.lines
    print(f"rated_charges   {rate_s:7.2f}s  {rows:,} rollup rows -> {rating.charge_count:,} charges  "
          f"{rows / rate_s:,.0f} rollup rows/s")
    print(f"invoice_drafts  {draft_s:7.2f}s  {drafted.invoices:,} invoices, {lines:,} lines  {lines / draft_s:,.0f} lines/s")
    print(f"peak RSS of this process: {peak:,.0f} MiB (before rating {before:,.0f} MiB)")


if __name__ == "__main__":
    main()
