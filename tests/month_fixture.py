"""A hand-made October 2026 whose every invoice amount is worked out by hand in test_month_close.

Edge cases in it: half-up cent rounding on each line (0.105 -> 0.11, 0.045 -> 0.05) so the total
(0.16) differs from rounding the unrounded sum (0.15); duplicates with the same and with a later
timestamp; a copy re-sent across midnight into the month (billed in September, not October); the
last millisecond of the month (billed) and the first of the next (not); a row with no org
and one on an unknown chain (quarantined); an org with usage but no contract (kept as unrated usage).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import pyarrow as pa

from billing_pipeline.domain.plans import MeteredCharge, Plan
from billing_pipeline.domain.price_models import PerUnit
from billing_pipeline.stores.plans import sync_plans

UTC = timezone.utc


def ts(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _row(t, rid, org, project, chain, status=200, bytes_out=500, method="eth_call"):
    return dict(timestamp=t, request_id=rid, org_id=org, project_id=project, api_key_id=f"key_{project}",
                chain=chain, method=method, http_status=status, bytes_out=bytes_out, latency_ms=12,
                source_ip="203.0.113.7")


def october_events() -> pa.Table:
    rows = []
    # org_d: one request every day at noon -> 31 requests (keeps every day non-empty)
    for day in range(1, 32):
        rows.append(_row(ts(2026, 10, day, 12), f"d-{day}", "org_d", "prj_d", "polygon-mainnet"))
    # org_a on eth: 7 requests, a1 delivered twice identically, a2 re-sent 3 s later, a3 failed
    for i in range(1, 8):
        rows.append(_row(ts(2026, 10, 5, 9, 0, i), f"a{i}", "org_a", "prj_a1", "eth-mainnet",
                         status=500 if i == 3 else 200, method="eth_getLogs" if i == 3 else "eth_call",
                         bytes_out=20_000 if i == 3 else 500))
    rows.append(_row(ts(2026, 10, 5, 9, 0, 1), "a1", "org_a", "prj_a1", "eth-mainnet"))
    rows.append(_row(ts(2026, 10, 5, 9, 0, 5), "a2", "org_a", "prj_a1", "eth-mainnet"))
    # org_a on bsc: 3 October requests
    rows.append(_row(ts(2026, 10, 31, 23, 59, 59, 999000), "b1", "org_a", "prj_a2", "bsc-mainnet"))
    rows.append(_row(ts(2026, 11, 1, 0, 0, 0, 200000), "b1", "org_a", "prj_a2", "bsc-mainnet"))  # copy, November
    rows.append(_row(ts(2026, 10, 10, 8), "b2", "org_a", "prj_a2", "bsc-mainnet"))
    rows.append(_row(ts(2026, 10, 10, 9), "b3", "org_a", "prj_a2", "bsc-mainnet"))
    rows.append(_row(ts(2026, 9, 30, 23, 59, 59, 999000), "b0", "org_a", "prj_a2", "bsc-mainnet"))  # September
    rows.append(_row(ts(2026, 11, 1), "b4", "org_a", "prj_a2", "bsc-mainnet"))  # November
    rows.append(_row(ts(2026, 9, 30, 23, 59, 59), "b5", "org_a", "prj_a2", "bsc-mainnet"))  # September...
    rows.append(_row(ts(2026, 10, 1, 0, 0, 0, 500000), "b5", "org_a", "prj_a2", "bsc-mainnet"))  # ...re-sent after midnight
    # org_b (fixed, Turkey): 2 requests
    rows += [_row(ts(2026, 10, 3, 10, i), f"tr{i}", "org_b", "prj_b", "eth-mainnet", method="debug_traceTransaction",
                  bytes_out=1_500_000_000) for i in range(2)]
    # org_c (hybrid, 10 included): 8 on eth + 5 on base = 13
    rows += [_row(ts(2026, 10, 20, 10, i), f"c{i}", "org_c", "prj_c", "eth-mainnet") for i in range(8)]
    rows += [_row(ts(2026, 10, 20, 11, i), f"c{i + 8}", "org_c", "prj_c", "base-mainnet", method="eth_blockNumber")
             for i in range(5)]
    # org_x: no contract
    rows += [_row(ts(2026, 10, 7, 7, i), f"x{i}", "org_x", "prj_x", "eth-mainnet") for i in range(4)]
    # a row without org and one on a chain the catalog does not know: quarantined
    rows.append(_row(ts(2026, 10, 8, 8), "q1", "", "prj_q", "eth-mainnet"))
    rows.append(_row(ts(2026, 10, 9, 8), "q2", "org_a", "prj_a1", "dogecoin-mainnet"))

    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("timestamp", pa.timestamp("ms", tz="UTC")), ("request_id", pa.string()), ("org_id", pa.string()),
        ("project_id", pa.string()), ("api_key_id", pa.string()), ("chain", pa.string()), ("method", pa.string()),
        ("http_status", pa.uint16()), ("bytes_out", pa.uint64()), ("latency_ms", pa.uint32()),
        ("source_ip", pa.string()),
    ]))


TEST_PLANS = {
    "pro_test": Plan(plan_id="pro_test", name="Pro", type="METERED", currency="USD", charges=[
        MeteredCharge(meter="requests", unit="request", price=PerUnit(unit_price=Decimal("0.015")))]),
    "fixed_tr": Plan(plan_id="fixed_tr", name="Enterprise TR", type="FIXED", currency="TRY", base_fee=Decimal(25000)),
    "hybrid_eur": Plan(plan_id="hybrid_eur", name="Growth EU", type="HYBRID", currency="EUR", base_fee=Decimal(500),
                       charges=[MeteredCharge(meter="requests", unit="request", included=10,
                                              price=PerUnit(unit_price=Decimal("0.25")))]),
    "filler": Plan(plan_id="filler", name="Filler", type="METERED", currency="USD", charges=[
        MeteredCharge(meter="requests", unit="request", price=PerUnit(unit_price=Decimal("0.001")))]),
}


def seed_contracts(conn: psycopg.Connection) -> None:
    sync_plans(conn, TEST_PLANS)
    conn.execute("""
        INSERT INTO customers (org_id, legal_name, country, tax_id) VALUES
            ('org_a', 'Alpha Ltd', 'US', NULL), ('org_b', 'Beta A.S.', 'TR', '1234567890'),
            ('org_c', 'Gamma GmbH', 'DE', NULL), ('org_d', 'Delta Inc', 'US', NULL);
    """)
    start = ts(2026, 1, 1)
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO contracts (contract_id, org_id, plan_id, contract_type, currency, region, start_at,
                   signed_doc_sha256) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
            [("CTR-A", "org_a", "pro_test", "METERED", "USD", "GLOBAL", start, None),
             ("CTR-B", "org_b", "fixed_tr", "FIXED", "TRY", "TR", start, "ab" * 32),
             ("CTR-C", "org_c", "hybrid_eur", "HYBRID", "EUR", "GLOBAL", start, "cd" * 32),
             ("CTR-D", "org_d", "filler", "METERED", "USD", "GLOBAL", start, None)])


def amend_ctr_d_to_filler_plus(conn: psycopg.Connection) -> None:
    """CTR-D moves to filler_plus (0.002 a request, twice filler's) from 16 October."""
    sync_plans(conn, {"filler_plus": Plan(plan_id="filler_plus", name="Filler+", type="METERED", currency="USD",
                                          charges=[MeteredCharge(meter="requests", unit="request",
                                                                 price=PerUnit(unit_price=Decimal("0.002")))])})
    conn.execute("""INSERT INTO contract_amendments (contract_id, effective_from, plan_id, reason)
                    VALUES ('CTR-D', '2026-10-16T00:00:00Z', 'filler_plus', 'price increase')""")


def split_ctr_a_on_the_10th(conn: psycopg.Connection) -> None:
    """CTR-A ends at 10 October 00:00 UTC and CTR-A2 (same org and plan) follows it."""
    conn.execute("UPDATE contracts SET end_at = '2026-10-10T00:00:00Z' WHERE contract_id = 'CTR-A'")
    conn.execute("""INSERT INTO contracts (contract_id, org_id, plan_id, contract_type, currency, region, start_at)
                    VALUES ('CTR-A2', 'org_a', 'pro_test', 'METERED', 'USD', 'GLOBAL', '2026-10-10T00:00:00Z')""")


OCT_START = ts(2026, 10, 1)
OCT_END = OCT_START + timedelta(days=31)


# The invoice totals of the hand-made October (worked out in test_month_close), as stored.
OCTOBER_TOTALS = [("CTR-A:2026-10:v1", "0.1600"), ("CTR-B:2026-10:v1", "30000.0000"),
                  ("CTR-C:2026-10:v1", "500.7500"), ("CTR-D:2026-10:v1", "0.0300")]


def invoice_totals(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [(i, str(t)) for i, t in conn.execute("SELECT invoice_id, total FROM invoices ORDER BY 1")]
