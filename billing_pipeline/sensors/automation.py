"""The automation-condition sensors that evaluate every asset's AutomationCondition.

billing_automation closes months: usage_rollups rolls up yesterday at 02:00 UTC; rated_charges
and invoice_drafts follow eagerly once every day of their month is present.
invoice_sinks issues them: each sink fires once for the latest month, when it is complete and
every blocking check upstream passed (see assets/conditions.py).

Both start RUNNING so a fresh deployment closes and issues months by itself; the data team can
stop either in the UI (stopping invoice_sinks holds invoicing while closes go on).
"""

import dagster as dg

SINK_ASSETS = dg.AssetSelection.assets("stripe_invoices", "parasut_invoices")

billing_automation_sensor = dg.AutomationConditionSensorDefinition(
    "billing_automation",
    # the ledger is an external asset (the sinks append to it), outside all(): its daily check is added
    target=(dg.AssetSelection.all() - SINK_ASSETS) | dg.AssetSelection.checks_for_assets("ledger"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Closes months (daily rollups at 02:00 UTC, then rating and drafts once every day is present) "
                "and keeps the analyst marts current. Everything but the sinks.",
)

invoice_sinks_sensor = dg.AutomationConditionSensorDefinition(
    "invoice_sinks",
    target=SINK_ASSETS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Issues each month's invoices once, when the month is complete and blocking checks passed.",
)
