"""Turkish drafts written straight into the billing database, for the Parasut sink's tests.

CTR-B: Beta A.S. (VKN 1234567890, has an e-invoice inbox -> e-Fatura), fixed 25,000 TL a month,
its usage as zero-amount lines (-> one static line plus a usage appendix). CTR-P: a person (TCKN
10000000146, no inbox -> e-Arsiv), metered, rated in USD and converted at 34.5678: 0.11 USD ->
3.80 TRY (KDV 0.76) and 0.05 USD -> 1.73 TRY (KDV 0.35).
"""

from __future__ import annotations

from decimal import Decimal

import psycopg

from billing_pipeline.stores.plans import sync_plans
from month_fixture import TEST_PLANS

DRAFTS = {
    "CTR-B:2026-10:v1": ("CTR-B", "org_b", "FIXED", None, [("Enterprise TR - monthly fee", "25000.00", "5000.00"),
                                                           ("ETH Mainnet - 2 requests", "0.00", "0.00")]),
    "CTR-P:2026-10:v1": ("CTR-P", "org_p", "METERED", "USD", [("BSC Mainnet - 3 requests", "1.73", "0.35"),
                                                              ("ETH Mainnet - 7 requests", "3.80", "0.76")]),
}
CUSTOMERS = {"org_b": ("Beta A.S.", "1234567890", "Kadikoy"), "org_p": ("Pelin Yilmaz", "10000000146", None)}


def seed_turkish_drafts(conn: psycopg.Connection, drafts: dict | None = None, customers: dict | None = None,
                        vat_rate: str | None = None) -> None:
    sync_plans(conn, TEST_PLANS)
    for org, (name, tax_id, office) in (customers or CUSTOMERS).items():
        conn.execute("INSERT INTO customers (org_id, legal_name, country, tax_id, tax_office, email) "
                     "VALUES (%s, %s, 'TR', %s, %s, %s)", (org, name, tax_id, office, f"fatura@{org}.test"))
    for invoice_id, (contract_id, org_id, kind, source, lines) in (drafts or DRAFTS).items():
        conn.execute(
            """INSERT INTO contracts (contract_id, org_id, plan_id, contract_type, currency, region, start_at,
                   signed_doc_sha256, days_until_due, vat_rate)
               VALUES (%s, %s, %s, %s, %s, 'TR', '2026-01-01', %s, 15, %s)""",
            (contract_id, org_id, "fixed_tr" if kind == "FIXED" else "pro_test", kind, source or "TRY", "ab" * 32,
             vat_rate))
        subtotal = sum(Decimal(a) for _, a, _ in lines)
        tax = sum(Decimal(v) for _, _, v in lines)
        conn.execute(
            """INSERT INTO invoices (invoice_id, contract_id, org_id, period_start, period_end, version, status,
                   currency, subtotal, tax_rate, tax, total, contract_doc_sha256, issue_date, source_currency, fx_rate)
               VALUES (%s, %s, %s, '2026-10-01', '2026-11-01', 1, 'DRAFT', 'TRY', %s, %s, %s, %s, %s, '2026-11-01',
                       %s, %s)""",
            (invoice_id, contract_id, org_id, subtotal, Decimal(vat_rate or "0.20"), tax, subtotal + tax, "ab" * 32,
             source, Decimal("34.5678") if source else None))
        with conn.cursor() as cur:
            cur.executemany("""INSERT INTO invoice_lines (invoice_id, line_no, charge_id, description, quantity,
                                   unit_price, amount, currency, vat_rate, vat_amount)
                               VALUES (%s, %s, %s, %s, 1, %s, %s, 'TRY', %s, %s)""",
                            [(invoice_id, n, f"{invoice_id}/c{n}", d, Decimal(a), Decimal(a),
                              Decimal(vat_rate or "0.20"), Decimal(v)) for n, (d, a, v) in enumerate(lines, start=1)])


def reset(conn: psycopg.Connection) -> None:
    conn.execute("TRUNCATE sink_outbox, parasut_contacts, parasut_tokens, invoice_lines, invoices, contracts, "
                 "customers CASCADE")
