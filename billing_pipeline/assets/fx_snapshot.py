"""fx_snapshot: the TCMB rate each foreign currency of the month's Turkish invoices uses."""

import dagster as dg

from ..domain.periods import Period
from ..resources import BillingDatabase
from ..resources.fx import FxSourcesResource
from ..steps.fx import snapshot_month
from .partitions import monthly_partitions
from .reporting import failures_as_messages, markdown_table

RATES_PRESENT = "fx_rates_present"
NOT_ESTIMATED = "fx_not_estimated"
CROSS_CHECK = "fx_agrees_with_ecb"
FRESH = "fx_fresh"
# A weekend plus a two-day holiday; longer (Kurban Bayrami, an outage) deserves a look before issuing.
MAX_BULLETIN_AGE_DAYS = 5


@dg.asset(
    partitions_def=monthly_partitions,
    automation_condition=dg.AutomationCondition.on_missing(),
    group_name="billing",
    kinds={"postgres"},
    owners=["team:billing-data"],
    check_specs=[
        # Not blocking: one currency without a trustworthy rate must not hold every other invoice;
        # the invoices that need it are drafted with the reason and stop at the sink.
        dg.AssetCheckSpec(RATES_PRESENT, asset="fx_snapshot",
                          description="Every currency Turkish contracts are rated in has a rate from a TCMB "
                                      "bulletin (or the last known one); a malformed or wrongly dated file fails it."),
        dg.AssetCheckSpec(NOT_ESTIMATED, asset="fx_snapshot",
                          description="No rate is an estimate (the last known rate reused because no source answered)."),
        dg.AssetCheckSpec(CROSS_CHECK, asset="fx_snapshot",
                          description="TCMB's rate is within the configured share of ECB's cross rate (yellow too "
                                      "when ECB's file could not be fetched, so nothing was compared)."),
        dg.AssetCheckSpec(FRESH, asset="fx_snapshot",
                          description=f"Every rate comes from a bulletin at most {MAX_BULLETIN_AGE_DAYS} days before "
                                      "the issue date (a longer gap: a holiday to confirm, or an outage)."),
    ],
)
def fx_snapshot(context: dg.AssetExecutionContext, billing_db: BillingDatabase,
                fx_sources: FxSourcesResource) -> dg.MaterializeResult:
    """ForexBuying of the last TCMB bulletin before the invoices' issue date (the first day after
    the month), stepping back over weekends and holidays, with the raw document's SHA-256 and the
    ECB cross rate. Only currencies some Turkish contract is rated in are fetched."""
    period = Period.parse_month(context.partition_key)
    sources = fx_sources.sources()
    try:
        with failures_as_messages():
            result = snapshot_month(billing_db.get_url(), period, sources, fx_sources.divergence_limit)
    finally:
        sources.close()
    ok = [o.snapshot for o in result.outcomes if o.snapshot is not None]
    failed = [o for o in result.outcomes if o.snapshot is None]
    estimated = [s for s in ok if s.estimated]
    flagged = [s for s in ok if s.cross_check.flagged]
    # a TCMB rate ECB's file could not be read for was not compared: not a pass (a currency ECB does
    # not quote has an ECB day and no rate, and stays a pass: there is nothing to compare it with)
    uncompared = [s for s in ok if not s.estimated and s.cross_check.ecb_date is None]
    ages = [(s.currency, s.bulletin_date, (result.issue_date - s.bulletin_date).days) for s in ok]
    stale = [a for a in ages if a[2] > MAX_BULLETIN_AGE_DAYS]
    table = markdown_table(
        ["currency", "TRY per unit", "source", "bulletin", "estimated", "ECB cross rate", "divergence", "sha256"],
        [(s.currency, s.rate, s.source, s.bulletin_date, s.estimated, s.cross_check.ecb_rate or "n/a",
          s.cross_check.divergence if s.cross_check.divergence is not None else "n/a", s.raw_sha256[:16])
         for s in ok])
    return dg.MaterializeResult(metadata={
        "issue_date": result.issue_date.isoformat(),
        "currencies": len(result.outcomes),
        "rates": table,
        "failures": markdown_table(["currency", "reason"], [(o.currency, o.failure) for o in failed]),
        "documents_fetched": len(result.documents),
        "ecb": result.ecb_note or "ok",
    }, check_results=[
        dg.AssetCheckResult(check_name=RATES_PRESENT, passed=not failed, severity=dg.AssetCheckSeverity.ERROR,
                            metadata={"failed": len(failed), "reasons": "; ".join(f"{o.currency}: {o.failure}"
                                                                                  for o in failed) or "none"}),
        dg.AssetCheckResult(check_name=NOT_ESTIMATED, passed=not estimated, severity=dg.AssetCheckSeverity.WARN,
                            metadata={"estimated": ", ".join(f"{s.currency} (bulletin {s.bulletin_date})"
                                                             for s in estimated) or "none",
                                      "why": result.ecb_note or "none"}),
        dg.AssetCheckResult(check_name=CROSS_CHECK, passed=not flagged and not uncompared,
                            severity=dg.AssetCheckSeverity.WARN,
                            metadata={"limit": fx_sources.max_divergence,
                                      "flagged": ", ".join(f"{s.currency}: {s.cross_check.divergence}"
                                                           for s in flagged) or "none",
                                      "not_compared": ", ".join(s.currency for s in uncompared) or "none",
                                      "ecb": result.ecb_note or "ok"}),
        dg.AssetCheckResult(check_name=FRESH, passed=not stale, severity=dg.AssetCheckSeverity.WARN,
                            metadata={"max_age_days": MAX_BULLETIN_AGE_DAYS, "stale": len(stale),
                                      "bulletins": markdown_table(["currency", "bulletin", "days before issue"], ages)}),
    ])
