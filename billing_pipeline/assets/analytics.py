"""The analysts' marts (dbt_models/, dbt on PostgreSQL) as Dagster assets in group `analytics`.

Two definitions over one manifest: the monthly marts (revenue per chain and per plan, top
customers, margin per chain), partitioned like the billing months and built one month per run
through the dbt variable `period_start` (incremental, delete+insert of that month); and the rest
(seeds, staging views, invoice status and ageing as of the run). dbt's tests load as asset checks.
Sources map to the assets that write their tables (meta.dagster.asset_key), so the lineage is one
graph from requests_raw to the marts.
"""


import json
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from ..analytics.project import dbt_connection, manifest_path
from ..domain.periods import Period
from ..resources import BillingDatabase
from ..stores.postgres import connect
from .partitions import monthly_partitions
from .reporting import markdown_table

AC = dg.AutomationCondition
MONTHLY = "tag:monthly"
CONTRACTS = dg.AssetSelection.assets("contracts")  # kept by the business: never "materialized"
# The reference models (seeds, views, as-of marts) are rebuilt daily at 05:00 UTC; at 06:00 the
# latest month's marts are refreshed, which catches what changed without a new upstream run:
# invoices issued, paid or voided. A month's marts also follow their inputs (eager).
_REFERENCE = AC.cron_tick_passed("0 5 * * *", "UTC") & ~AC.in_progress()
_DAILY = (AC.cron_tick_passed("0 6 * * *", "UTC") & AC.in_latest_time_window() & ~AC.in_progress()
          & ~AC.any_deps_missing().ignore(CONTRACTS))


class AnalyticsTranslator(DagsterDbtTranslator):
    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "analytics"

    def get_owners(self, dbt_resource_props: Mapping[str, Any]):
        owners = ((dbt_resource_props.get("meta") or {}).get("dagster") or {}).get("owners")
        return owners or ["team:billing-analytics"]

    def get_asset_check_spec(self, asset_spec, manifest, unique_id, project):
        """dbt's tests as checks, each described by what it tests (dbt gives them no description)."""
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None or spec.description:
            return spec
        test = manifest["nodes"].get(unique_id, {})
        meta = test.get("test_metadata") or {}
        arguments = {k: v for k, v in (meta.get("kwargs") or {}).items() if k not in ("model", "column_name")}
        described = f"dbt test {meta.get('name') or test.get('name')}"
        if test.get("column_name"):
            described += f" on column {test['column_name']}"
        if arguments:
            described += ": " + ", ".join(f"{k} = {v}" for k, v in sorted(arguments.items()))
        return spec._replace(description=described)

    def get_automation_condition(self, dbt_resource_props: Mapping[str, Any]) -> AC | None:
        if "monthly" in (dbt_resource_props.get("tags") or []):
            return (AC.eager().ignore(CONTRACTS) | _DAILY).with_label("a month's inputs changed, or daily at 06:00")
        return _REFERENCE.with_label("daily at 05:00 UTC")


TRANSLATOR = AnalyticsTranslator()


REVENUE_PER_CHAIN = dg.AssetKey(["marts", "revenue_per_chain"])


def _with_preview(context: dg.AssetExecutionContext, events, db_url: str, period_start: str | None):
    """dbt's own events, with a preview of revenue per chain and its totals on that mart."""
    for event in events:
        if isinstance(event, dg.Output) and context.asset_key_for_output(event.output_name) == REVENUE_PER_CHAIN:
            yield event.with_metadata({**(event.metadata or {}), **_revenue_preview(db_url, period_start)})
        else:
            yield event


def _revenue_preview(db_url: str, period_start: str | None) -> dict:
    with connect(db_url) as conn:
        rows = conn.execute(
            """SELECT period_start, chain, currency, revenue, revenue_usd, revenue_issued, requests
               FROM analytics_marts.revenue_per_chain WHERE %(month)s::date IS NULL OR period_start = %(month)s
               ORDER BY period_start DESC, revenue_usd DESC NULLS LAST LIMIT 20""", {"month": period_start}).fetchall()
        totals = conn.execute(
            """SELECT currency, sum(revenue), sum(revenue_usd) FROM analytics_marts.revenue_per_chain
               WHERE %(month)s::date IS NULL OR period_start = %(month)s GROUP BY 1 ORDER BY 1""",
            {"month": period_start}).fetchall()
    return {"revenue_by_currency": ", ".join(f"{t[1]:,} {t[0].strip()}" for t in totals) or "0",
            "revenue_usd": dg.MetadataValue.text(f"{sum((t[2] or 0) for t in totals):,}"),
            "preview": markdown_table(["month", "chain", "currency", "revenue", "revenue USD", "issued", "requests"],
                                      rows)}


@dbt_assets(manifest=manifest_path(), select=MONTHLY, partitions_def=monthly_partitions,
            dagster_dbt_translator=TRANSLATOR, name="analytics_monthly_marts")
def analytics_monthly_marts(context: dg.AssetExecutionContext, dbt: DbtCliResource, billing_db: BillingDatabase):
    """One billing month of the marts: `dbt build` of the selected models and their tests with
    `--vars {"period_start": ...}` (each mart deletes and re-inserts that month)."""
    month = Period.parse_month(context.partition_key).start.isoformat()
    db_url = billing_db.get_url()
    with dbt_connection(db_url):
        events = dbt.cli(["build", "--vars", json.dumps({"period_start": month})], context=context).stream()
        yield from _with_preview(context, events, db_url, month)


@dbt_assets(manifest=manifest_path(), exclude=MONTHLY, dagster_dbt_translator=TRANSLATOR,
            name="analytics_reference")
def analytics_reference(context: dg.AssetExecutionContext, dbt: DbtCliResource, billing_db: BillingDatabase):
    """Seeds (reporting FX rates, infrastructure costs), the staging views and the as-of-today
    marts (invoice status, ageing): `dbt build` of the selected ones and their tests."""
    with dbt_connection(billing_db.get_url()):
        yield from dbt.cli(["build"], context=context).stream()
