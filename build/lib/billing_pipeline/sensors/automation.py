"""The automation-condition sensor that evaluates every asset's AutomationCondition.

usage_rollups rolls up yesterday at 02:00 UTC; rated_charges and invoice_drafts follow eagerly once
every day of their month is present. It starts RUNNING so a fresh deployment closes months by
itself; the data team can stop it in the UI.
"""

import dagster as dg

billing_automation_sensor = dg.AutomationConditionSensorDefinition(
    "billing_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
)
