"""Demo plans, customers and contracts: metered, fixed and hybrid, global (Stripe) and Turkish (Parasut).

Org i of the synthetic generator gets contract CTR-<i>. The first orgs are the heavy ones, so the
interesting contracts (enterprise fixed price, hybrid, Turkish) sit on them; the long tail is on
Pro (metered, USD) with every fifth org on the Free plan.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

import psycopg


@dataclass(frozen=True)
class Plan:
    plan_id: str
    name: str
    plan_type: str
    currency: str
    base_price: Decimal
    rate_per_unit: Decimal
    included_units: int


DEMO_PLANS = (
    Plan("free", "Free", "METERED", "USD", Decimal("0"), Decimal("0"), 0),
    Plan("pro", "Pro", "METERED", "USD", Decimal("0"), Decimal("0.00005"), 0),
    Plan("pro_tr", "Pro TR", "METERED", "TRY", Decimal("0"), Decimal("0.0017"), 0),
    Plan("growth", "Growth", "HYBRID", "USD", Decimal("500"), Decimal("0.00005"), 100_000),
    Plan("growth_eur", "Growth EU", "HYBRID", "EUR", Decimal("450"), Decimal("0.000045"), 100_000),
    Plan("growth_tr", "Growth TR", "HYBRID", "TRY", Decimal("17500"), Decimal("0.0017"), 100_000),
    Plan("enterprise", "Enterprise", "FIXED", "USD", Decimal("12000"), Decimal("0"), 0),
    Plan("enterprise_tr", "Enterprise TR", "FIXED", "TRY", Decimal("25000"), Decimal("0"), 0),
)

# (plan, region, currency, legal name, country, tax id) for the first orgs; the rest follow the tail rule.
_HEAD = (
    ("enterprise", "GLOBAL", "USD", "Northwind Exchange Ltd", "GB", None),
    ("growth_eur", "GLOBAL", "EUR", "Rheinwerk Wallet GmbH", "DE", None),
    ("enterprise_tr", "TR", "TRY", "Anadolu Kripto Teknoloji A.S.", "TR", "1234567890"),
    ("growth", "GLOBAL", "USD", "Blocklane Labs Inc", "US", None),
    ("pro_tr", "TR", "TRY", "Bosphorus Node Yazilim Ltd. Sti.", "TR", "9876543210"),
    ("growth_tr", "TR", "TRY", "Kapadokya Zincir Bilisim A.S.", "TR", "4567890123"),
)

CONTRACT_START = datetime(2025, 1, 1, tzinfo=timezone.utc)


def contract_id(org_index: int) -> str:
    return f"CTR-{org_index:04d}"


def _terms(i: int):
    if i < len(_HEAD):
        return _HEAD[i]
    plan = "free" if i % 5 == 0 else "pro"
    return (plan, "GLOBAL", "USD", f"Demo Customer {i:04d} LLC", "US", None)


def seed_demo_contracts(conn: psycopg.Connection, orgs: int) -> int:
    """Upsert the demo plans, one customer per org and one contract each. Idempotent."""
    plans = {p.plan_id: p for p in DEMO_PLANS}
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO plans (plan_id, name, plan_type, currency, base_price, rate_per_unit, included_units)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (plan_id) DO UPDATE SET name = EXCLUDED.name, plan_type = EXCLUDED.plan_type,
                   currency = EXCLUDED.currency, base_price = EXCLUDED.base_price,
                   rate_per_unit = EXCLUDED.rate_per_unit, included_units = EXCLUDED.included_units""",
            [(p.plan_id, p.name, p.plan_type, p.currency, p.base_price, p.rate_per_unit, p.included_units)
             for p in DEMO_PLANS])
        customers, contracts = [], []
        for i in range(orgs):
            plan_id, region, currency, name, country, tax_id = _terms(i)
            plan = plans[plan_id]
            org = f"org_{i:04d}"
            customers.append((org, name, country, tax_id, f"billing@{org.replace('_', '')}.example"))
            fixed = plan.plan_type != "METERED"
            doc = f"https://contracts.example/{contract_id(i)}.pdf" if fixed else None
            doc_sha = hashlib.sha256(f"signed contract {contract_id(i)}".encode()).hexdigest() if fixed else None
            contracts.append((contract_id(i), org, plan_id, plan.plan_type, currency, region, CONTRACT_START,
                              plan.base_price if fixed else None, doc, doc_sha, fixed))
        cur.executemany(
            """INSERT INTO customers (org_id, legal_name, country, tax_id, email) VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (org_id) DO UPDATE SET legal_name = EXCLUDED.legal_name, country = EXCLUDED.country,
                   tax_id = EXCLUDED.tax_id, email = EXCLUDED.email""", customers)
        cur.executemany(
            """INSERT INTO contracts (contract_id, org_id, plan_id, contract_type, currency, region, start_at,
                   price_fixed, signed_doc_url, signed_doc_sha256, auto_renew)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (contract_id) DO UPDATE SET plan_id = EXCLUDED.plan_id,
                   contract_type = EXCLUDED.contract_type, currency = EXCLUDED.currency, region = EXCLUDED.region,
                   start_at = EXCLUDED.start_at, price_fixed = EXCLUDED.price_fixed,
                   signed_doc_url = EXCLUDED.signed_doc_url, signed_doc_sha256 = EXCLUDED.signed_doc_sha256,
                   auto_renew = EXCLUDED.auto_renew""", contracts)
    return len(contracts)
