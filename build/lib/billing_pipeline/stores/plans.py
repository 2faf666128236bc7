"""Plans in PostgreSQL: synced from the reviewed catalog, read back as validated Plan objects."""

from __future__ import annotations

import hashlib
import json

import psycopg

from ..domain.plans import Plan
from ..errors import BillingError


def plan_document(plan: Plan) -> str:
    return json.dumps(plan.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def sync_plans(conn: psycopg.Connection, plans: dict[str, Plan]) -> int:
    """Upsert every plan of the catalog (a plan no longer in the catalog stays, for old contracts)."""
    rows = []
    for plan in plans.values():
        doc = plan_document(plan)
        rows.append((plan.plan_id, plan.name, plan.type, plan.currency, plan.billing_cycle, plan.base_fee, doc,
                     hashlib.sha256(doc.encode()).hexdigest()))
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO plans (plan_id, name, plan_type, currency, billing_cycle, base_price, definition,
                   definition_sha256) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (plan_id) DO UPDATE SET name = EXCLUDED.name, plan_type = EXCLUDED.plan_type,
                   currency = EXCLUDED.currency, billing_cycle = EXCLUDED.billing_cycle,
                   base_price = EXCLUDED.base_price, definition = EXCLUDED.definition,
                   definition_sha256 = EXCLUDED.definition_sha256, updated_at = now()
               WHERE plans.definition_sha256 <> EXCLUDED.definition_sha256""", rows)
    return len(rows)


def plans_from_db(conn: psycopg.Connection) -> dict[str, Plan]:
    plans = {}
    for plan_id, definition in conn.execute("SELECT plan_id, definition FROM plans"):
        try:
            plans[plan_id] = Plan.model_validate(definition)
        except ValueError as exc:
            raise BillingError(f"plan {plan_id} in the database is not a valid plan: {exc}") from None
    return plans
