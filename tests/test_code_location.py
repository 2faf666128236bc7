"""The code location as the Dagster UI loads it: workspace.yaml, in its own code-server process,
read through the webserver's GraphQL schema. It must really load (not merely exit 0) and show
every asset and check with its group, description, kind, owner and partitions."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

WORKSPACE = str(Path(__file__).resolve().parent.parent / "workspace.yaml")

QUERY = """
{
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation {
            repositories {
              name
              sensors { name description sensorState { status } }
              jobs { name description }
            }
          }
        }
      }
    }
  }
  assetNodes {
    assetKey { path }
    groupName description kinds
    owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    partitionDefinition { type description }
    assetChecksOrError { ... on AssetChecks { checks { name description blocking } } }
  }
}
"""

BILLING_ASSETS = {
    "requests_raw": ("usage", None), "usage_rollups": ("usage", "TIME_WINDOW"), "contracts": ("billing", None),
    "fx_snapshot": ("billing", "TIME_WINDOW"), "rated_charges": ("billing", "TIME_WINDOW"),
    "invoice_drafts": ("billing", "TIME_WINDOW"), "stripe_invoices": ("sinks", "TIME_WINDOW"),
    "parasut_invoices": ("sinks", "TIME_WINDOW"), "invoice_corrections": ("sinks", "TIME_WINDOW"),
    "audit_snapshot": ("proof", "TIME_WINDOW"), "ledger": ("proof", None),
    "marts/revenue_per_chain": ("analytics", "TIME_WINDOW"), "marts/revenue_per_plan": ("analytics", "TIME_WINDOW"),
    "marts/top_customers_by_usage": ("analytics", "TIME_WINDOW"),
    "marts/top_customers_by_revenue": ("analytics", "TIME_WINDOW"),
    "marts/margin_per_chain": ("analytics", "TIME_WINDOW"), "marts/invoice_status": ("analytics", None),
    "marts/invoice_ageing": ("analytics", None), "reference/reporting_fx_rates": ("analytics", None),
    "reference/infra_costs": ("analytics", None), "staging/stg_invoices": ("analytics", None),
    "staging/stg_invoice_lines": ("analytics", None), "staging/stg_contracts": ("analytics", None),
    "staging/stg_usage_rollups": ("analytics", None),
}
CHECKS = {
    "usage_rollups": {"no_quarantined_rows", "rollups_match_clickhouse", "no_late_raw_rows"},
    "rated_charges": {"all_usage_rated", "rollups_rated_once", "usage_within_soft_caps", "usage_within_hard_caps",
                      "renewal_notices"},
    "invoice_drafts": {"drafts_add_up", "lira_lines_match_rate"},
    "fx_snapshot": {"fx_rates_present", "fx_not_estimated", "fx_agrees_with_ecb", "fx_fresh"},
    "stripe_invoices": {"all_invoices_issued", "stripe_totals_match", "outbox_not_stuck", "stripe_invoices_unchanged"},
    "parasut_invoices": {"all_turkish_invoices_issued", "parasut_totals_match", "outbox_not_stuck",
                         "parasut_invoices_unchanged"},
    "invoice_corrections": {"all_corrections_issued", "corrections_add_up"},
    "audit_snapshot": {"snapshot_verifies"},
    "ledger": {"ledger_balanced_and_chained"},
}
BLOCKING = {"rollups_match_clickhouse", "rollups_rated_once", "drafts_add_up", "lira_lines_match_rate"}


@pytest.fixture(scope="module")
def loaded():
    with dg.instance_for_test() as instance:
        with define_out_of_process_context(WORKSPACE, None, instance) as context:
            result = execute_dagster_graphql(context, QUERY)
    assert not result.errors, result.errors
    return result.data


def test_the_location_really_loads_with_its_sensors_running_by_default(loaded):
    [entry] = loaded["workspaceOrError"]["locationEntries"]
    location = entry["locationOrLoadError"]
    assert entry["loadStatus"] == "LOADED" and location["__typename"] == "RepositoryLocation", location
    [repository] = location["repositories"]
    sensors = {s["name"]: s for s in repository["sensors"]}
    assert {name: s["sensorState"]["status"] for name, s in sensors.items()} == {
        "billing_automation": "RUNNING", "invoice_sinks": "RUNNING", "stripe_payment_events": "RUNNING",
        "check_alerts": "RUNNING"}
    assert all(s["description"] for s in sensors.values())
    assert {j["name"] for j in repository["jobs"]} >= {"export_evidence_job"}


def test_every_asset_and_check_shows_its_group_description_kind_owner_and_partitions(loaded):
    nodes = {"/".join(n["assetKey"]["path"]): n for n in loaded["assetNodes"]}
    assert set(nodes) == set(BILLING_ASSETS)
    for key, (group, partitions) in BILLING_ASSETS.items():
        node = nodes[key]
        assert (node["groupName"], (node["partitionDefinition"] or {}).get("type")) == (group, partitions), key
        assert node["description"] and node["kinds"] and node["owners"], key
    assert nodes["usage_rollups"]["partitionDefinition"]["description"].startswith("Daily")
    assert nodes["marts/revenue_per_chain"]["partitionDefinition"]["description"].startswith("Monthly")
    for asset, names in CHECKS.items():
        checks = {c["name"]: c for c in nodes[asset]["assetChecksOrError"]["checks"]}
        assert set(checks) == names, asset
        assert all(c["description"] for c in checks.values()), asset
        assert {n for n, c in checks.items() if c["blocking"]} == names & BLOCKING, asset
    dbt_checks = {c["name"]: c["description"] for c in nodes["marts/revenue_per_chain"]["assetChecksOrError"]["checks"]}
    assert dbt_checks["sums_to_documents_revenue_per_chain_is_issued__revenue_issued"] == (  # dbt tests load as checks
        "dbt test sums_to_documents: documents = is_issued, measure = revenue_issued")
    every_check = [c for n in nodes.values() for c in (n["assetChecksOrError"].get("checks") or [])]
    assert len(every_check) >= 60 and all(c["description"] for c in every_check)
