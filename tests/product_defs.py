"""The product's assets bound to a test's stores; a test overrides only the resources it points elsewhere."""

from __future__ import annotations

import dagster as dg
from dagster_dbt import DbtCliResource

from billing_pipeline.analytics.project import DBT_EXECUTABLE, DBT_PROJECT_DIR
from billing_pipeline.definitions import ASSET_CHECKS, ASSETS
from billing_pipeline.resources import BillingDatabase, ClickHouseResource, OpenMeterResource, StripeResource
from billing_pipeline.resources.audit_storage import AuditStorageResource
from billing_pipeline.resources.fx import FxSourcesResource
from billing_pipeline.resources.parasut import ParasutResource

# Nothing in a test may reach the public FX sites: an address that refuses at once.
OFFLINE = "http://127.0.0.1:9"


def product_defs(db_url: str, chdb_path=None, **overrides) -> dg.Definitions:
    resources = {
        "clickhouse": ClickHouseResource(chdb_path=str(chdb_path)) if chdb_path else ClickHouseResource(),
        "billing_db": BillingDatabase(url=db_url),
        "openmeter": OpenMeterResource(),
        "audit_storage": AuditStorageResource(),
        "stripe": StripeResource(),
        "parasut": ParasutResource(),
        "fx_sources": FxSourcesResource(tcmb_base_url=OFFLINE, ecb_base_url=OFFLINE),
        "dbt": DbtCliResource(project_dir=str(DBT_PROJECT_DIR), dbt_executable=DBT_EXECUTABLE),
        **overrides,
    }
    return dg.Definitions(assets=ASSETS, asset_checks=ASSET_CHECKS, resources=resources,
                          executor=dg.in_process_executor)
