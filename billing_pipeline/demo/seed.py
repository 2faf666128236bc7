"""Demo customers and contracts on the catalog's plans: metered, fixed and hybrid, global (Stripe)
and Turkish (Parasut), with a yearly contract and one that starts mid-month.

Org i of the synthetic generator gets contract CTR-<i>. The first orgs are the heavy ones, so the
interesting contracts sit on them; the long tail is on Pro with every fifth org on Free.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import psycopg

from ..domain.meters import load_meters
from ..domain.periods import Period
from ..domain.plans import load_plans
from ..stores.plans import sync_plans

# (plan, region, currency, legal name, country, tax id, timezone) for the first orgs.
_HEAD = (
    ("enterprise", "GLOBAL", "USD", "Northwind Exchange Ltd", "GB", None, "Europe/London"),
    ("growth_eur", "GLOBAL", "EUR", "Rheinwerk Wallet GmbH", "DE", None, "Europe/Berlin"),
    ("enterprise_tr", "TR", "TRY", "Anadolu Kripto Teknoloji A.S.", "TR", "1234567890", "Europe/Istanbul"),
    ("growth", "GLOBAL", "USD", "Blocklane Labs Inc", "US", None, "America/New_York"),
    ("pro_tr", "TR", "TRY", "Bosphorus Node Yazilim Ltd. Sti.", "TR", "9876543217", "Europe/Istanbul"),
    ("enterprise_yearly", "GLOBAL", "USD", "Meridian Custody SA", "CH", None, "Europe/Zurich"),
    ("enterprise", "GLOBAL", "USD", "Quayside Payments Pte Ltd", "SG", None, "Asia/Singapore"),
)
CONTRACT_START = datetime(2025, 1, 1, tzinfo=timezone.utc)


def contract_id(org_index: int) -> str:
    return f"CTR-{org_index:04d}"


def _terms(i: int):
    if i < len(_HEAD):
        return _HEAD[i]
    return ("free" if i % 5 == 0 else "pro", "GLOBAL", "USD", f"Demo Customer {i:04d} LLC", "US", None, "UTC")


def _start(i: int, period: Period) -> datetime:
    if i == 5:  # yearly: its contract year starts in the demo month, so the yearly fee shows
        return datetime(period.start.year - 1, period.start.month, 1, tzinfo=timezone.utc)
    if i == 6:  # signed mid-month: the fixed fee is prorated
        return datetime.combine(period.start + timedelta(days=15), datetime.min.time(), tzinfo=timezone.utc)
    return CONTRACT_START


def seed_demo_contracts(conn: psycopg.Connection, orgs: int, period: Period) -> int:
    """Sync the plan catalog, then upsert one customer and one contract per org. Idempotent."""
    plans = load_plans(known_meters={m.slug for m in load_meters()})
    sync_plans(conn, plans)
    customers, contracts = [], []
    for i in range(orgs):
        plan_id, region, currency, name, country, tax_id, tz = _terms(i)
        plan = plans[plan_id]
        org = f"org_{i:04d}"
        customers.append((org, name, country, tax_id, f"billing@{org.replace('_', '')}.example"))
        signed = plan.type != "METERED"
        doc = f"https://contracts.example/{contract_id(i)}.pdf" if signed else None
        doc_sha = hashlib.sha256(f"signed contract {contract_id(i)}".encode()).hexdigest() if signed else None
        contracts.append((contract_id(i), org, plan_id, plan.type, plan.billing_cycle, currency, region,
                          _start(i, period), tz, doc, doc_sha, signed))
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO customers (org_id, legal_name, country, tax_id, email) VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (org_id) DO UPDATE SET legal_name = EXCLUDED.legal_name, country = EXCLUDED.country,
                   tax_id = EXCLUDED.tax_id, email = EXCLUDED.email""", customers)
        cur.executemany(
            """INSERT INTO contracts (contract_id, org_id, plan_id, contract_type, billing_cycle, currency, region,
                   start_at, timezone, signed_doc_url, signed_doc_sha256, auto_renew)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (contract_id) DO UPDATE SET plan_id = EXCLUDED.plan_id,
                   contract_type = EXCLUDED.contract_type, billing_cycle = EXCLUDED.billing_cycle,
                   currency = EXCLUDED.currency, region = EXCLUDED.region,
                   start_at = EXCLUDED.start_at, timezone = EXCLUDED.timezone,
                   signed_doc_url = EXCLUDED.signed_doc_url, signed_doc_sha256 = EXCLUDED.signed_doc_sha256,
                   auto_renew = EXCLUDED.auto_renew""", contracts)
    return len(contracts)
