"""stripe_invoices: the month's global invoices issued in Stripe (or, in a dry run, recorded)."""

from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import dagster as dg

from ..domain.periods import Period
from ..resources import BillingDatabase
from ..resources.stripe import StripeResource
from ..sinks.stripe.issuing import issue_month
from ..steps.issue_guard import refuse_unless_ready
from ..steps.reconciliation import stripe_live_totals
from ..stores.postgres import connect
from .conditions import issue_once
from .invoice_drafts import invoice_drafts
from .partitions import monthly_partitions
from .rated_charges import contracts
from .reporting import failures_as_messages, markdown_table, money_text, outbox_check

ALL_ISSUED = "all_invoices_issued"
TOTALS_MATCH = "stripe_totals_match"


@dg.asset(
    deps=[invoice_drafts],
    partitions_def=monthly_partitions,
    automation_condition=issue_once(dg.AssetSelection.assets(contracts.key)),
    group_name="sinks",
    kinds={"stripe"},
    owners=["team:billing-data"],
    check_specs=[
        dg.AssetCheckSpec(ALL_ISSUED, asset="stripe_invoices",
                          description="Every global draft of the month reached Stripe; a stopped invoice is listed "
                                      "with its reason."),
        dg.AssetCheckSpec(TOTALS_MATCH, asset="stripe_invoices",
                          description="Each Stripe invoice's subtotal (and amount due, without Stripe Tax) equals "
                                      "our invoice."),
        dg.AssetCheckSpec("outbox_not_stuck", asset="stripe_invoices",
                          description="No write to Stripe has been left pending (maybe sent) or failed for "
                                      "more than an hour."),
    ],
)
def stripe_invoices(context: dg.AssetExecutionContext, billing_db: BillingDatabase,
                    stripe: StripeResource) -> dg.MaterializeResult:
    """Customer upserted, a draft invoice with one pre-rated item per line, finalized exactly once
    (idempotency keys and an outbox that survives crashes); Stripe's ids, number and URLs stored on
    our invoice and INVOICE_ISSUED in the ledger. Without BILLING_STRIPE_API_KEY: a dry run that
    records the exact requests in sink_outbox and sends nothing."""
    period = Period.parse_month(context.partition_key)
    db_url = billing_db.get_url()
    with failures_as_messages():
        refuse_unless_ready("stripe_invoices", db_url, period)
        gateway = stripe.gateway()
        result = issue_month(db_url, gateway, period, concurrency=stripe.concurrency)
    failed = result.by_status("FAILED")
    with connect(db_url) as conn:
        stopped = conn.execute(
            """SELECT i.invoice_id, i.sink_error FROM invoices i JOIN contracts c USING (contract_id)
               WHERE i.period_start = %s AND c.region = 'GLOBAL' AND i.sink_error IS NOT NULL ORDER BY 1""",
            (period.start,)).fetchall()
        mismatches = conn.execute(
            """SELECT i.invoice_id, i.currency, i.subtotal, i.external_subtotal, i.total, i.external_amount_due
               FROM invoices i JOIN contracts c USING (contract_id)
               WHERE i.period_start = %s AND i.sink = 'STRIPE' AND i.external_subtotal IS NOT NULL
                 AND i.kind <> 'CREDIT_NOTE' AND (i.external_subtotal <> i.subtotal
                      OR (NOT c.stripe_tax AND i.external_amount_due IS DISTINCT FROM i.total))
               ORDER BY 1""", (period.start,)).fetchall()
        compared = conn.execute("SELECT count(*) FROM invoices WHERE period_start = %s AND sink = 'STRIPE' "
                                "AND external_subtotal IS NOT NULL", (period.start,)).fetchone()[0]
    issued = result.by_status("ISSUED")
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for o in issued:
        totals[o.currency] += o.subtotal
    mode = "dry run (nothing sent)" if gateway is None else f"live, {stripe.api_base or 'api.stripe.com'}"
    checks = [
        dg.AssetCheckResult(check_name=ALL_ISSUED, passed=not stopped, severity=dg.AssetCheckSeverity.ERROR,
                            metadata={"stopped": len(stopped), "mode": mode,
                                      "reasons": markdown_table(["invoice", "reason"], stopped[:50])}),
        dg.AssetCheckResult(check_name=TOTALS_MATCH, passed=not mismatches, severity=dg.AssetCheckSeverity.ERROR,
                            metadata={"compared": compared, "differing": len(mismatches),
                                      "differences": markdown_table(
                                          ["invoice", "currency", "our subtotal", "Stripe subtotal", "our total",
                                           "Stripe amount due"], mismatches[:50])}),
        outbox_check(db_url, "STRIPE"),
    ]
    rate = result.calls / result.seconds if result.seconds else 0.0
    return dg.MaterializeResult(check_results=checks, metadata={
        "mode": mode,
        "issued": len(issued),
        "failed": len(failed),
        "dry_run_invoices": len(result.by_status("DRY_RUN")),
        "dry_run_requests": sum(o.requests for o in result.outcomes),
        "awaiting_dispute_flow": len(result.awaiting_dispute_flow),
        "issued_subtotal": money_text(dict(totals)),
        "stripe_calls": result.calls,
        "stripe_retries": result.retried,
        "stripe_429": result.throttled,
        "calls_per_second": dg.MetadataValue.float(round(rate, 2)),
        "rate_limit_per_second": dg.MetadataValue.float(float(gateway.ops_per_second) if gateway else 0.0),
        "seconds": dg.MetadataValue.float(round(result.seconds, 2)),
        "failures": markdown_table(["invoice", "reason"], [(o.invoice_id, o.reason) for o in failed[:50]]),
    })


@dg.asset_check(asset=stripe_invoices, description="Every Stripe invoice issued in the last two months, fetched again: "
                                                   "status and subtotal still ours (a void or an edit in the Dashboard "
                                                   "turns it red). Daily at 04:00 UTC and on demand.",
                automation_condition=dg.AutomationCondition.cron_tick_passed("0 4 * * *", "UTC"))
def stripe_invoices_unchanged(billing_db: BillingDatabase, stripe: StripeResource) -> dg.AssetCheckResult:
    gateway = stripe.gateway()
    if gateway is None:
        return dg.AssetCheckResult(passed=True, metadata={"mode": "dry run: nothing was issued in Stripe"})
    today = datetime.now(timezone.utc).date()
    since = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    finding = stripe_live_totals(billing_db.get_url(), gateway, since)
    return dg.AssetCheckResult(passed=finding.passed, severity=dg.AssetCheckSeverity.ERROR, metadata={
        **finding.counts, "since": since.isoformat(), "differences": markdown_table(
            ["invoice", "Stripe id", "ours", "Stripe now", "difference"], finding.rows[:50])})
