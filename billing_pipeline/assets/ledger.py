"""The audit ledger as an asset of its own: written by the sinks and the audit snapshot, checked here."""

import dagster as dg

from ..resources import BillingDatabase
from ..steps.reconciliation import ledger_intact

ledger = dg.AssetSpec(
    "ledger",
    description="Append-only, double-entry, hash-chained ledger in PostgreSQL: invoices issued, payments, "
                "credit notes, voids and audit snapshots.",
    group_name="proof",
    kinds={"postgres"},
    owners=["team:billing-data"],
    deps=["stripe_invoices", "parasut_invoices", "audit_snapshot"],
)


@dg.asset_check(asset=ledger.key, description="Every entry's hash and link recomputed, every transaction sums to zero "
                                          "per currency, and every issued document agrees with the ledger's record "
                                          "of its issue (amounts, currency, credit consumed; none missing). Runs "
                                          "daily at 03:00 UTC and on demand.",
                automation_condition=dg.AutomationCondition.cron_tick_passed("0 3 * * *", "UTC"))
def ledger_balanced_and_chained(billing_db: BillingDatabase) -> dg.AssetCheckResult:
    finding = ledger_intact(billing_db.get_url())
    return dg.AssetCheckResult(passed=finding.passed, severity=dg.AssetCheckSeverity.ERROR, metadata=finding.counts)
