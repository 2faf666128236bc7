"""Global drafts written straight into the billing database, for the Stripe sink's tests.

Three orgs: org_a (USD, two lines, send_invoice in 14 days, a signed contract), org_c (EUR,
charge_automatically, 120.00 of prepaid credit against a 500.75 invoice) and org_t (USD, Stripe
Tax on, a German customer). Amounts are what the tests assert, in minor units.
"""

from __future__ import annotations

from decimal import Decimal

import psycopg

from billing_pipeline.stores.plans import sync_plans
from month_fixture import TEST_PLANS

PERIOD = "2026-10"
DRAFTS = {
    # invoice id: (contract, org, currency, [(description, amount)], credits)
    "CTR-A:2026-10:v1": ("CTR-A", "org_a", "USD", [("ETH Mainnet - 7 requests", "0.11"),
                                                   ("BSC Mainnet - 3 requests", "0.05")], "0"),
    "CTR-C:2026-10:v1": ("CTR-C", "org_c", "EUR", [("Growth EU - monthly fee", "500.00"),
                                                   ("ETH Mainnet - 3 requests over 10 included", "0.75")], "120.00"),
    "CTR-T:2026-10:v1": ("CTR-T", "org_t", "USD", [("Pro - monthly fee", "49.00")], "0"),
}


def seed_global_drafts(conn: psycopg.Connection, drafts: dict | None = None, currency_of: dict | None = None) -> None:
    drafts = drafts or DRAFTS
    sync_plans(conn, TEST_PLANS)
    conn.execute("""INSERT INTO customers (org_id, legal_name, country, email) VALUES
                        ('org_a', 'Alpha Ltd', 'US', 'billing@alpha.test'), ('org_c', 'Gamma GmbH', 'DE', NULL),
                        ('org_t', 'Tau AG', 'DE', 'ap@tau.test') ON CONFLICT DO NOTHING""")
    for invoice_id, (contract_id, org_id, currency, lines, credits) in drafts.items():
        collection = "charge_automatically" if org_id == "org_c" else "send_invoice"
        conn.execute(
            """INSERT INTO contracts (contract_id, org_id, plan_id, contract_type, currency, region, start_at,
                   signed_doc_sha256, collection_method, days_until_due, stripe_tax)
               VALUES (%s, %s, 'pro_test', 'METERED', %s, 'GLOBAL', '2026-01-01', %s, %s, 14, %s)
               ON CONFLICT DO NOTHING""",
            (contract_id, org_id, currency, "ab" * 32 if org_id == "org_a" else None, collection, org_id == "org_t"))
        subtotal = sum(Decimal(a) for _, a in lines)
        credit = max(Decimal(0), min(Decimal(credits), subtotal))
        conn.execute(
            """INSERT INTO invoices (invoice_id, contract_id, org_id, period_start, period_end, version, status,
                   currency, subtotal, tax_rate, tax, credits_applied, total, contract_doc_sha256)
               VALUES (%s, %s, %s, '2026-10-01', '2026-11-01', %s, 'DRAFT', %s, %s, 0, 0, %s, %s,
                       (SELECT signed_doc_sha256 FROM contracts WHERE contract_id = %s))""",
            (invoice_id, contract_id, org_id, int(invoice_id.rsplit(":v", 1)[1]), currency, subtotal, credit,
             subtotal - credit, contract_id))
        with conn.cursor() as cur:
            cur.executemany("""INSERT INTO invoice_lines (invoice_id, line_no, charge_id, description, quantity,
                                   unit_price, amount, currency) VALUES (%s, %s, %s, %s, 1, %s, %s, %s)""",
                            [(invoice_id, n, f"{invoice_id}/c{n}", d, Decimal(a), Decimal(a), currency)
                             for n, (d, a) in enumerate(lines, start=1)])


def reset(conn: psycopg.Connection) -> None:
    """Empty everything the sink touches but the ledger, whose guards forbid it: tests count ledger
    entries after a mark instead."""
    conn.execute("TRUNCATE sink_outbox, stripe_events, stripe_customers, invoice_lines, invoices, contracts, "
                 "customers CASCADE")
