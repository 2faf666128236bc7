"""The month the fault tests close: the hand-made October of month_fixture plus seven customers,
so that each outside system sees dozens of calls; and the figures it must end with, worked out by
hand.

CTR-P is a Turkish person and CTR-T1..T3 Turkish companies, all billed in dollars (so the month
needs TCMB's rate); CTR-G1..G3 are global. Each has one contract on pro_test (0.015 USD a request).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import psycopg
import pyarrow as pa
import pytest

from fx_server import FxServer
from month_fixture import OCTOBER_TOTALS, _row, october_events, ts

OCT_30, OCT_28, NOV_1 = date(2026, 10, 30), date(2026, 10, 28), date(2026, 11, 1)
BULLETIN = "/kurlar/202610/30102026.xml"  # the bulletin an invoice issued on 1 November uses
# org id: (tax number, requests on 5 October, region)
EXTRA = {"org_p": ("10000000146", 7, "TR"), "org_t1": ("2000000010", 10, "TR"), "org_t2": ("2000000002", 20, "TR"),
         "org_t3": ("2000000036", 40, "TR"), "org_g1": (None, 100, "GLOBAL"), "org_g2": (None, 200, "GLOBAL"),
         "org_g3": (None, 1000, "GLOBAL")}
INBOXES = ["1234567890", "2000000010", "2000000036"]  # e-invoice users (e-Fatura); the others get an e-Arsiv
TOTALS = sorted(OCTOBER_TOTALS + [("CTR-G1:2026-10:v1", "1.5000"), ("CTR-G2:2026-10:v1", "3.0000"),
                                  ("CTR-G3:2026-10:v1", "15.0000"), ("CTR-P:2026-10:v1", "4.5600"),
                                  ("CTR-T1:2026-10:v1", "6.2300"), ("CTR-T2:2026-10:v1", "12.4400"),
                                  ("CTR-T3:2026-10:v1", "24.8900")])
STRIPE_SUBTOTALS = {"CTR-A:2026-10:v1": ("usd", 16), "CTR-C:2026-10:v1": ("eur", 50075),
                    "CTR-D:2026-10:v1": ("usd", 3), "CTR-G1:2026-10:v1": ("usd", 150),
                    "CTR-G2:2026-10:v1": ("usd", 300), "CTR-G3:2026-10:v1": ("usd", 1500)}
D = Decimal
# In lira at 34.5678, KDV 20% per line: 7 requests = 0.105 -> 0.11 USD -> 3.80 TRY, KDV 0.76; 10 = 0.15 USD ->
# 5.18517 -> 5.19, KDV 1.038 -> 1.04; 20 = 0.30 USD -> 10.37034 -> 10.37, KDV 2.07; 40 = 0.60 USD -> 20.74, KDV 4.15
PARASUT_TOTALS = {  # tax number: (our invoice, e-document, net, KDV, total)
    "1234567890": ("CTR-B:2026-10:v1", "e_invoices", D("25000.00"), D("5000.00"), D("30000.00")),
    "10000000146": ("CTR-P:2026-10:v1", "e_archives", D("3.80"), D("0.76"), D("4.56")),
    "2000000010": ("CTR-T1:2026-10:v1", "e_invoices", D("5.19"), D("1.04"), D("6.23")),
    "2000000002": ("CTR-T2:2026-10:v1", "e_archives", D("10.37"), D("2.07"), D("12.44")),
    "2000000036": ("CTR-T3:2026-10:v1", "e_invoices", D("20.74"), D("4.15"), D("24.89"))}


def extra_events() -> pa.Table:
    return pa.Table.from_pylist(
        [_row(ts(2026, 10, 5, 10, i // 60, i % 60), f"{org}-{i}", org, f"prj_{org}", "eth-mainnet")
         for org, (_, count, _) in EXTRA.items() for i in range(count)], schema=october_events().schema)


def add_extra_customers(conn: psycopg.Connection) -> None:
    for org, (tax_number, _, region) in EXTRA.items():
        conn.execute("INSERT INTO customers (org_id, legal_name, country, tax_id, email) VALUES (%s, %s, %s, %s, %s)",
                     (org, f"{org} Ltd", "TR" if region == "TR" else "US", tax_number, f"ap@{org}.test"))
        conn.execute("INSERT INTO contracts (contract_id, org_id, plan_id, contract_type, currency, region, start_at) "
                     "VALUES (%s, %s, 'pro_test', 'METERED', 'USD', %s, '2026-01-01')",
                     ("CTR-" + org.removeprefix("org_").upper(), org, region))


def publish_rates(fx: FxServer) -> None:
    """30 October's bulletin (USD 34.5678), the 28th's, and ECB's file (USD 1.0850, TRY 37.6200 on the 30th)."""
    fx.publish_tcmb(OCT_28, {"USD": (1, "34.1000")})
    fx.publish_tcmb(OCT_30, {"USD": (1, "34.5678")})
    fx.publish_ecb({OCT_30: {"USD": "1.0850", "TRY": "37.6200"}, OCT_28: {"USD": "1.0800", "TRY": "37.0000"}})


@pytest.fixture
def month(october, usage_store) -> str:
    """The hand-made October and the EXTRA customers with their contracts and usage; the DB URL."""
    usage_store.insert_arrow("requests_raw", extra_events())
    with psycopg.connect(october, autocommit=True) as conn:
        add_extra_customers(conn)
    return october
