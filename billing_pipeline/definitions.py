"""The one place that builds the Dagster Definitions (workspace.yaml points here)."""

from __future__ import annotations

import dagster as dg

from dagster_dbt import DbtCliResource

from . import settings
from .analytics.project import DBT_EXECUTABLE, DBT_PROJECT_DIR
from .assets.analytics import analytics_monthly_marts, analytics_reference
from .assets.audit_snapshot import audit_snapshot
from .assets.fx_snapshot import fx_snapshot
from .assets.invoice_corrections import invoice_corrections
from .assets.invoice_drafts import invoice_drafts
from .assets.ledger import ledger, ledger_balanced_and_chained
from .assets.parasut_invoices import parasut_invoices, parasut_invoices_unchanged
from .assets.rated_charges import contracts, rated_charges
from .assets.stripe_invoices import stripe_invoices, stripe_invoices_unchanged
from .assets.usage_rollups import no_late_raw_rows, requests_raw, usage_rollups
from .jobs.evidence import export_evidence_job
from .resources import BillingDatabase, ClickHouseResource, OpenMeterResource, StripeResource
from .resources.audit_storage import AuditStorageResource
from .resources.fx import FxSourcesResource
from .resources.parasut import DEFAULT_BASE_URL as PARASUT_BASE_URL, ParasutResource
from .sensors.automation import billing_automation_sensor, invoice_sinks_sensor
from .sensors.check_alerts import check_alerts
from .sensors.stripe_events import stripe_payment_events
from .steps.fx import DEFAULT_ECB_BASE, DEFAULT_TCMB_BASE

ASSETS = [requests_raw, contracts, usage_rollups, fx_snapshot, rated_charges, invoice_drafts, audit_snapshot,
          stripe_invoices, parasut_invoices, invoice_corrections, ledger, analytics_monthly_marts, analytics_reference]
ASSET_CHECKS = [ledger_balanced_and_chained, no_late_raw_rows, stripe_invoices_unchanged, parasut_invoices_unchanged]


def _secret(name: str) -> dg.EnvVar | None:
    # EnvVar keeps the value out of the run config shown in the UI; unset means "not used".
    return dg.EnvVar(name) if settings.env(name) else None


def build_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "clickhouse": ClickHouseResource(
            url=_secret(settings.CLICKHOUSE_URL_ENV),
            user=_secret(settings.CLICKHOUSE_USER_ENV),
            password=_secret(settings.CLICKHOUSE_PASSWORD_ENV),
        ),
        "billing_db": BillingDatabase(url=_secret(settings.DATABASE_URL_ENV)),
        "openmeter": OpenMeterResource(url=_secret(settings.OPENMETER_URL_ENV),
                                       token=_secret(settings.OPENMETER_TOKEN_ENV)),
        "audit_storage": AuditStorageResource(
            endpoint_url=_secret(settings.AUDIT_S3_ENDPOINT_ENV), bucket=settings.env(settings.AUDIT_S3_BUCKET_ENV)
            or "billing-audit", access_key=_secret(settings.AUDIT_S3_ACCESS_KEY_ENV),
            secret_key=_secret(settings.AUDIT_S3_SECRET_KEY_ENV),
            retention_years=settings.whole_number_env(settings.AUDIT_RETENTION_YEARS_ENV, 10)),
        "fx_sources": FxSourcesResource(
            tcmb_base_url=settings.env(settings.TCMB_BASE_URL_ENV) or DEFAULT_TCMB_BASE,
            ecb_base_url=settings.env(settings.ECB_BASE_URL_ENV) or DEFAULT_ECB_BASE,
            max_divergence=str(settings.decimal_env(settings.FX_MAX_DIVERGENCE_ENV, "0.02"))),
        "parasut": ParasutResource(
            base_url=settings.env(settings.PARASUT_BASE_URL_ENV) or PARASUT_BASE_URL,
            company_id=settings.env(settings.PARASUT_COMPANY_ID_ENV), client_id=_secret(settings.PARASUT_CLIENT_ID_ENV),
            client_secret=_secret(settings.PARASUT_CLIENT_SECRET_ENV), username=_secret(settings.PARASUT_USERNAME_ENV),
            password=_secret(settings.PARASUT_PASSWORD_ENV),
            dry_run=settings.flag_env(settings.PARASUT_DRY_RUN_ENV)),
        "dbt": DbtCliResource(project_dir=str(DBT_PROJECT_DIR), dbt_executable=DBT_EXECUTABLE),
        "stripe": StripeResource(
            api_key=_secret(settings.STRIPE_API_KEY_ENV), api_base=settings.env(settings.STRIPE_API_BASE_ENV),
            max_ops_per_second=float(settings.decimal_env(settings.STRIPE_MAX_OPS_ENV, "0")) or None,
            concurrency=settings.whole_number_env(settings.STRIPE_CONCURRENCY_ENV, 16),
            dry_run=settings.flag_env(settings.STRIPE_DRY_RUN_ENV)),
    }


def build_definitions() -> dg.Definitions:
    # chdb is one engine per process: steps must share the run's process. A ClickHouse server
    # has no such limit, so steps may run in parallel processes.
    embedded_usage_store = settings.env(settings.CLICKHOUSE_URL_ENV) is None
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=ASSET_CHECKS,
        jobs=[export_evidence_job],
        resources=build_resources(),
        sensors=[billing_automation_sensor, invoice_sinks_sensor, stripe_payment_events, check_alerts],
        executor=dg.in_process_executor if embedded_usage_store else dg.multiprocess_executor,
    )


defs = build_definitions()
