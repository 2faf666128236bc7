"""invoice_corrections: the dispute flow's last step. New versions of issued invoices become credit
notes and supplementary invoices in Stripe and Parasut; the issued invoices are never touched."""

import dagster as dg

from ..domain.periods import Period
from ..resources import BillingDatabase
from ..resources.audit_storage import AuditStorageResource
from ..resources.parasut import ParasutResource
from ..resources.stripe import StripeResource
from ..sinks.parasut import issuing as parasut_issuing
from ..sinks.parasut.refunds import issue_refunds
from ..sinks.stripe import issuing as stripe_issuing
from ..sinks.stripe.credit_notes import issue_credit_notes
from ..steps.corrections import complete_versions, month_corrections, plan_corrections
from ..steps.reconciliation import corrections_add_up
from ..stores.postgres import connect
from .invoice_drafts import invoice_drafts
from .parasut_invoices import parasut_invoices
from .partitions import monthly_partitions
from .reporting import failures_as_messages, markdown_table
from .stripe_invoices import stripe_invoices

ALL_ISSUED = "all_corrections_issued"
ADD_UP = "corrections_add_up"


@dg.asset(
    deps=[invoice_drafts, stripe_invoices, parasut_invoices],
    partitions_def=monthly_partitions,
    group_name="sinks",
    kinds={"stripe", "parasut"},
    owners=["team:billing-data"],
    check_specs=[
        dg.AssetCheckSpec(ALL_ISSUED, asset="invoice_corrections",
                          description="Every credit note and supplementary invoice of the month reached its "
                                      "provider with the same total; a stopped one is listed with its reason."),
        dg.AssetCheckSpec(ADD_UP, asset="invoice_corrections",
                          description="For every corrected invoice: the issued invoice plus its credit notes and "
                                      "supplementary invoices equal the version in force, line by line."),
    ],
)
def invoice_corrections(context: dg.AssetExecutionContext, billing_db: BillingDatabase, stripe: StripeResource,
                        parasut: ParasutResource, audit_storage: AuditStorageResource) -> dg.MaterializeResult:
    """Run deliberately (never by a sensor): after a dispute backfill has re-drafted an issued
    month, each new version's per-line difference against the version in force is issued: the
    lines that went down as a credit note (Stripe credit note against the issued invoice; Parasut
    refund bill), the lines that went up as a supplementary invoice; CREDIT_NOTE and
    SUPPLEMENTARY_ISSUED in the ledger, linked to the issued invoice. A version whose amounts did
    not change issues nothing."""
    period = Period.parse_month(context.partition_key)
    db_url = billing_db.get_url()
    with failures_as_messages():
        planned = plan_corrections(db_url, period, context.run.run_id)
        gateway = stripe.gateway()
        supplementary = stripe_issuing.issue_month(db_url, gateway, period, stripe.concurrency,
                                                   kinds=("SUPPLEMENTARY",))
        credit_notes = issue_credit_notes(db_url, gateway, period)
        client = parasut.client(db_url)
        try:
            if client is None:
                turkish = parasut_issuing.issue_month(db_url, None, period, kinds=("SUPPLEMENTARY",))
            else:
                with audit_storage.open_bucket() as bucket:
                    turkish = parasut_issuing.issue_month(
                        db_url, client, period, storage=bucket, workers=parasut.workers,
                        polls=parasut_issuing.PollPolicy(interval=parasut.poll_interval_seconds),
                        kinds=("SUPPLEMENTARY",))
            refunds = issue_refunds(db_url, client, period)
        finally:
            if client is not None:
                client.close()
        corrected = complete_versions(db_url, period)
    documents = month_corrections(db_url, period)
    outcomes = supplementary.outcomes + credit_notes + turkish.outcomes + refunds
    stopped = [(d[0], d[11]) for d in documents if d[11]] + [(p.invoice_id, p.problem) for p in planned if p.problem]
    differing = [(d[0], d[4], d[10], d[10] - d[4]) for d in documents if d[10] is not None and d[10] != d[4]]
    with connect(db_url) as conn:
        finding = corrections_add_up(conn, period)
    live = {"GLOBAL": gateway is not None, "TR": client is not None}  # a dry run leaves its documents DRAFT
    unsent = [(d[0], d[7]) for d in documents if d[7] not in ("ISSUED", "PAID") and live.get(d[12])]
    return dg.MaterializeResult(metadata={
        "versions_planned": len(planned),
        "unchanged_versions": sum(1 for p in planned if not p.documents and not p.problem),
        "documents_planned": sum(len(p.documents) for p in planned),
        "issued": sum(1 for o in outcomes if o.status == "ISSUED"),
        "failed": sum(1 for o in outcomes if o.status == "FAILED"),
        "dry_run_documents": sum(1 for o in outcomes if o.status == "DRY_RUN"),
        "versions_corrected": len(corrected),
        "documents": markdown_table(["document", "kind", "corrects", "currency", "subtotal", "tax", "total",
                                     "status", "sink", "provider id"], [d[:10] for d in documents[:50]]),
    }, check_results=[
        dg.AssetCheckResult(check_name=ALL_ISSUED, passed=not (stopped or differing or unsent),
                            severity=dg.AssetCheckSeverity.ERROR, metadata={
                                "stopped": len(stopped), "not_issued": len(unsent), "differing": len(differing),
                                "reasons": markdown_table(["document", "reason"], (stopped + unsent)[:50]),
                                "differences": markdown_table(["document", "our subtotal", "provider's", "difference"],
                                                              differing[:50])}),
        dg.AssetCheckResult(check_name=ADD_UP, passed=finding.passed, severity=dg.AssetCheckSeverity.ERROR,
                            metadata={**finding.counts, "differences": markdown_table(
                                ["version", "charge", "issued + corrections", "version in force", "difference"],
                                finding.rows[:50])}),
    ])
