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


def plans_for_month(conn: psycopg.Connection, period_start) -> tuple[dict[str, Plan], list[str]]:
    """The plans a month is rated with, recorded in month_plan_versions (migration 0013), and the
    ids of those kept at an earlier version than the catalog's.

    Until the month has an issued invoice, each plan's current version: a price fixed before
    issuing re-prices the month. Once one is issued, the versions it was rated with: a re-run
    (a dispute) is priced as the month was issued, whatever was changed in the catalog since; a
    plan new since then takes its current version. Call inside the rating's transaction."""
    issued = conn.execute("SELECT EXISTS (SELECT 1 FROM invoices WHERE period_start = %s "
                          "AND status NOT IN ('DRAFT', 'SUPERSEDED'))", (period_start,)).fetchone()[0]
    if not issued:
        conn.execute("DELETE FROM month_plan_versions WHERE period_start = %s", (period_start,))
    conn.execute(
        """INSERT INTO month_plan_versions (period_start, plan_id, version_id)
           SELECT %s, plan_id, max(version_id) FROM plan_versions GROUP BY plan_id
           ON CONFLICT (period_start, plan_id) DO NOTHING""", (period_start,))
    plans, kept = {}, []
    for plan_id, definition, current in conn.execute(
            """SELECT m.plan_id, v.definition, m.version_id = (SELECT max(version_id) FROM plan_versions c
                                                               WHERE c.plan_id = m.plan_id)
               FROM month_plan_versions m JOIN plan_versions v USING (version_id)
               WHERE m.period_start = %s ORDER BY m.plan_id""", (period_start,)):
        try:
            plans[plan_id] = Plan.model_validate(definition)
        except ValueError as exc:
            raise BillingError(f"plan {plan_id} in the database is not a valid plan: {exc}") from None
        if not current:
            kept.append(plan_id)
    return plans, kept
