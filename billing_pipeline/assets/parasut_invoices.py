"""parasut_invoices: the month's Turkish invoices issued as e-Fatura or e-Arsiv (or, dry run, recorded)."""

from collections import Counter
from datetime import datetime, timedelta, timezone

import dagster as dg

from ..domain.periods import Period
from ..resources import BillingDatabase
from ..resources.audit_storage import AuditStorageResource
from ..resources.parasut import ParasutResource
from ..sinks.parasut.issuing import PollPolicy, issue_month
from ..steps.issue_guard import refuse_unless_ready
from ..steps.reconciliation import parasut_live_totals
from ..stores.postgres import connect
from .conditions import issue_once
from .invoice_drafts import invoice_drafts
from .partitions import monthly_partitions
from .rated_charges import contracts
from .reporting import failures_as_messages, markdown_table, money_text, outbox_check

ALL_ISSUED = "all_turkish_invoices_issued"
TOTALS_MATCH = "parasut_totals_match"


@dg.asset(
    deps=[invoice_drafts],
    partitions_def=monthly_partitions,
    automation_condition=issue_once(dg.AssetSelection.assets(contracts.key)),
    group_name="sinks",
    kinds={"parasut", "s3"},
    owners=["team:billing-data"],
    check_specs=[
        dg.AssetCheckSpec(ALL_ISSUED, asset="parasut_invoices",
                          description="Every Turkish draft of the month is an e-Fatura or e-Arsiv with its PDF "
                                      "stored; a stopped invoice is listed with its reason."),
        dg.AssetCheckSpec(TOTALS_MATCH, asset="parasut_invoices",
                          description="Parasut's net, KDV and total equal our TRY invoice to the kurus."),
        dg.AssetCheckSpec("outbox_not_stuck", asset="parasut_invoices",
                          description="No write to Parasut has been left pending (maybe sent) or failed for "
                                      "more than an hour."),
    ],
)
def parasut_invoices(context: dg.AssetExecutionContext, billing_db: BillingDatabase, parasut: ParasutResource,
                     audit_storage: AuditStorageResource) -> dg.MaterializeResult:
    """Contact upserted by tax number, a TRL sales invoice (our invoice id and the contract's hash
    in its note), e-Fatura when the customer has an e-invoice inbox else e-Arsiv, the job polled,
    the PDF stored in S3 with its SHA-256. Fixed contracts: one static line plus a usage appendix
    (JSON and PDF) in S3. Without BILLING_PARASUT_* credentials: a dry run (outbox only)."""
    period = Period.parse_month(context.partition_key)
    db_url = billing_db.get_url()
    client = parasut.client(db_url)
    polls = PollPolicy(interval=parasut.poll_interval_seconds)
    with failures_as_messages():
        refuse_unless_ready("parasut_invoices", db_url, period)
        try:
            if client is None:
                result = issue_month(db_url, None, period)
            else:
                with audit_storage.open_bucket() as bucket:
                    result = issue_month(db_url, client, period, storage=bucket, workers=parasut.workers, polls=polls)
        finally:
            if client is not None:
                client.close()
    with connect(db_url) as conn:
        stopped = conn.execute(
            """SELECT i.invoice_id, i.sink_error FROM invoices i JOIN contracts c USING (contract_id)
               WHERE i.period_start = %s AND c.region = 'TR' AND (i.sink_error IS NOT NULL
                   OR (i.status IN ('ISSUED', 'PAID') AND i.pdf_sha256 IS NULL AND %s)) ORDER BY 1""",
            (period.start, client is not None)).fetchall()
        differing = conn.execute(
            """SELECT invoice_id, subtotal, external_subtotal, tax, external_tax, total, external_total FROM invoices
               WHERE period_start = %s AND sink = 'PARASUT' AND external_total IS NOT NULL
                 AND (external_subtotal <> subtotal OR external_tax <> tax OR external_total <> total) ORDER BY 1""",
            (period.start,)).fetchall()
    issued = result.by_status("ISSUED")
    kinds = Counter(o.kind for o in issued)
    mode = "dry run (nothing sent)" if client is None else f"live, {parasut.base_url}"
    return dg.MaterializeResult(metadata={
        "mode": mode,
        "issued": len(issued),
        "e_fatura": kinds.get("E_FATURA", 0),
        "e_arsiv": kinds.get("E_ARSIV", 0),
        "failed": len(result.by_status("FAILED")),
        "dry_run_requests": sum(o.requests for o in result.outcomes),
        "pdfs_stored": result.pdfs_fetched,
        "awaiting_dispute_flow": len(result.awaiting_dispute_flow),
        "issued_total": money_text({"TRY": sum((o.total for o in issued), 0)}) if issued else "0",
        "parasut_calls": client.calls if client else 0,
        "parasut_429": client.throttled if client else 0,
        "seconds": dg.MetadataValue.float(round(result.seconds, 2)),
    }, check_results=[
        dg.AssetCheckResult(check_name=ALL_ISSUED, passed=not stopped, severity=dg.AssetCheckSeverity.ERROR,
                            metadata={"stopped": len(stopped), "mode": mode,
                                      "reasons": markdown_table(["invoice", "reason"],
                                                                [(i, r or "PDF not stored yet") for i, r in stopped[:50]])}),
        dg.AssetCheckResult(check_name=TOTALS_MATCH, passed=not differing, severity=dg.AssetCheckSeverity.ERROR,
                            metadata={"differing": len(differing), "differences": markdown_table(
                                ["invoice", "net", "Parasut net", "KDV", "Parasut KDV", "total", "Parasut total"],
                                differing[:50])}),
        outbox_check(db_url, "PARASUT"),
    ])


@dg.asset_check(asset=parasut_invoices, description="Every Parasut document issued in the last two months, fetched "
                                                    "again: net, KDV and total still ours, not cancelled or archived "
                                                    "(an edit in Parasut's UI turns it red). Daily at 04:30 UTC.",
                automation_condition=dg.AutomationCondition.cron_tick_passed("30 4 * * *", "UTC"))
def parasut_invoices_unchanged(billing_db: BillingDatabase, parasut: ParasutResource) -> dg.AssetCheckResult:
    client = parasut.client(billing_db.get_url())
    if client is None:
        return dg.AssetCheckResult(passed=True, metadata={"mode": "dry run: nothing was issued in Parasut"})
    today = datetime.now(timezone.utc).date()
    since = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    try:
        finding = parasut_live_totals(billing_db.get_url(), client, since)
    finally:
        client.close()
    return dg.AssetCheckResult(passed=finding.passed, severity=dg.AssetCheckSeverity.ERROR, metadata={
        **finding.counts, "since": since.isoformat(), "differences": markdown_table(
            ["invoice", "Parasut document", "ours (net/KDV/total)", "Parasut now", "total difference"],
            finding.rows[:50])})
