"""invoice_drafts: rated charges rounded per line into one draft invoice per contract and month."""


import dagster as dg

from ..domain.periods import Period
from ..resources import BillingDatabase
from ..steps.invoicing import draft_month, draft_problems, month_in_force
from ..steps.reconciliation import lira_lines_match_rate
from ..stores.postgres import connect
from .partitions import monthly_partitions
from .fx_snapshot import fx_snapshot
from .rated_charges import rated_charges
from .reporting import failures_as_messages, markdown_table, money_text


@dg.asset(
    deps=[rated_charges, fx_snapshot],
    partitions_def=monthly_partitions,
    automation_condition=dg.AutomationCondition.eager(),
    group_name="billing",
    owners=["team:billing-data"],
    kinds={"postgres"},
    check_specs=[dg.AssetCheckSpec(
        "drafts_add_up", asset="invoice_drafts", blocking=True,
        description="Every draft's lines sum to its subtotal, its total is subtotal + tax - credits and not negative, "
                    "each contract has one current draft for the month, and each contract's current version has "
                    "one line per rated charge of the month, rounded once from it. Blocking: no sink issues a "
                    "month that fails it."),
        dg.AssetCheckSpec(
            "lira_lines_match_rate", asset="invoice_drafts", blocking=True,
            description="Each lira line equals its source line times the month's TCMB rate, rounded to the kurus; "
                        "only the last discount line of a month free in the contract's currency differs, taking the "
                        "lines' roundings so that the month is free in lira too.")],
)
def invoice_drafts(context: dg.AssetExecutionContext, billing_db: BillingDatabase) -> dg.MaterializeResult:
    """DRAFT invoices (subtotal, tax, total, lines rounded once to the minor unit). Re-running
    replaces drafts only; an issued invoice is never touched: a contract whose lines changed since
    it was issued gets a new version (for invoice_corrections), one whose lines did not gets none."""
    period = Period.parse_month(context.partition_key)
    with failures_as_messages():
        drafted = draft_month(billing_db.get_url(), period, run_id=context.run.run_id)
    problems = draft_problems(billing_db.get_url(), period)
    check = dg.AssetCheckResult(check_name="drafts_add_up", passed=not problems, severity=dg.AssetCheckSeverity.ERROR,
                                metadata={"drafts": drafted.invoices, "problems": len(problems),
                                          "details": markdown_table(["invoice", "problem"], problems[:50])})
    with connect(billing_db.get_url()) as conn:
        lira = lira_lines_match_rate(conn, period)
    lira_check = dg.AssetCheckResult(
        check_name="lira_lines_match_rate", passed=lira.passed, severity=dg.AssetCheckSeverity.ERROR,
        metadata={**lira.counts, "differences": markdown_table(
            ["invoice", "line", "source amount", "rate", "amount", "expected", "difference"], lira.rows[:50])})
    # the month as it stands, not only what this run wrote: once most of a month is issued a
    # re-run drafts a few contracts, and the month seemed to lose the issued ones
    in_force, month_totals = month_in_force(billing_db.get_url(), period)
    return dg.MaterializeResult(check_results=[check, lira_check], metadata={
        "dagster/row_count": in_force,
        "total": money_text(month_totals),
        "drafted_this_run": drafted.invoices,
        "drafted_lines": drafted.lines,
        "drafted_total": money_text(dict(sorted(drafted.totals.items()))),
        # after a dispute backfill: new versions of issued invoices, for invoice_corrections to issue
        "new_versions_of_issued_invoices": markdown_table(
            ["invoice", "subtotal", "tax", "total", "currency"],
            [(i.invoice_id, i.draft.subtotal, i.draft.tax, i.draft.total, i.draft.currency)
             for i in drafted.new_versions]),
        # voided in the sink: their contract-months are not drafted or billed again
        "left_voided": ", ".join(drafted.left_voided[:50]) or "none",
        "largest_invoices": markdown_table(
            ["invoice", "org", "lines", "subtotal", "tax", "total", "currency"],
            [(i.invoice_id, i.draft.org_id, len(i.draft.lines), i.draft.subtotal, i.draft.tax, i.draft.total,
              i.draft.currency) for i in drafted.largest],
        ),
    })
