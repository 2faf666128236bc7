"""rated_charges: one month of usage priced per contract, unrounded, with its pricing inputs."""

from decimal import Decimal

import dagster as dg

from ..domain.periods import Period
from ..resources import BillingDatabase
from ..steps.rating import rate_month
from ..steps.reconciliation import renewal_notices, rollups_rated_once
from ..stores.postgres import connect
from .partitions import monthly_partitions
from .reporting import failures_as_messages, markdown_table, money_text
from .usage_rollups import usage_rollups

contracts = dg.AssetSpec(
    "contracts",
    description="Plans, customers and contracts (METERED / FIXED / HYBRID) in PostgreSQL, maintained by the business.",
    group_name="billing",
    kinds={"postgres"},
    owners=["team:finance"],  # plans and contracts are the business's
)


# Eager rates the month once its last day is rolled up (02:00 on the 1st), but a customer west of
# UTC also needs the day after the month (steps/rating._days_needed), rolled up at 02:00 on the 2nd
# and mapped to the next month only: that first run fails naming the day, and nothing asked again.
RETRY_AFTER_THE_DAY_AFTER = (
    dg.AutomationCondition.in_latest_time_window()
    & dg.AutomationCondition.execution_failed()
    & dg.AutomationCondition.cron_tick_passed("30 2 2 * *", "UTC").since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()  # contracts ignored below, with eager's
    & ~dg.AutomationCondition.in_progress()
).with_label("failed: again at 02:30 on the 2nd, once the day after the month is rolled up")


@dg.asset(
    deps=[usage_rollups, contracts],
    partitions_def=monthly_partitions,
    # contracts are maintained outside the pipeline and never "materialized": they must not hold
    # the month back as a missing dependency.
    automation_condition=(dg.AutomationCondition.eager() | RETRY_AFTER_THE_DAY_AFTER).ignore(
        dg.AssetSelection.assets(contracts.key)),
    group_name="billing",
    kinds={"postgres"},
    owners=["team:billing-data"],
    check_specs=[
        dg.AssetCheckSpec("all_usage_rated", asset="rated_charges",
                          description="Every request of the month is covered by a contract."),
        dg.AssetCheckSpec("rollups_rated_once", asset="rated_charges", blocking=True,
                          description="Every usage_rollups row of the month is rated by exactly one contract, or "
                                      "covered by none and counted in unrated_usage; none is counted twice."),
        dg.AssetCheckSpec("usage_within_soft_caps", asset="rated_charges",
                          description="No contract crossed a soft usage cap (a warning to the account team)."),
        dg.AssetCheckSpec("usage_within_hard_caps", asset="rated_charges",
                          description="No contract crossed a hard usage cap: an alert, never an automatic charge."),
        dg.AssetCheckSpec("renewal_notices", asset="rated_charges",
                          description="No contract without auto-renew ends within 30 days of the month's end."),
    ],
)
def rated_charges(context: dg.AssetExecutionContext, billing_db: BillingDatabase) -> dg.MaterializeResult:
    """Each active contract's month priced by its plan. Refuses to run while any day of the month
    is missing from usage_rollups; usage no contract covers is kept in unrated_usage and counted."""
    period = Period.parse_month(context.partition_key)
    with failures_as_messages():
        summary = rate_month(billing_db.get_url(), period, run_id=context.run.run_id)
    preview = summary.largest
    checks = [
        dg.AssetCheckResult(check_name="all_usage_rated", passed=summary.unrated_requests == 0,
                            severity=dg.AssetCheckSeverity.ERROR,
                            metadata={"unrated_requests": summary.unrated_requests,
                                      "orgs": ", ".join(summary.unrated_orgs[:20]) or "none"}),
        *(dg.AssetCheckResult(
            check_name=f"usage_within_{level.lower()}_caps", passed=not alerts, severity=severity,
            metadata={"alerts": len(alerts), "contracts": markdown_table(
                ["contract", "meter", "cap", "used", "over by"],
                [(a.contract_id, a.meter, a.cap, a.used, a.used - a.cap) for a in alerts[:50]])})
          for level, severity in (("SOFT", dg.AssetCheckSeverity.WARN), ("HARD", dg.AssetCheckSeverity.ERROR))
          for alerts in [[a for a in summary.alerts if a.level == level]]),
        _renewal_check(billing_db.get_url(), period),
        _rated_once_check(billing_db.get_url(), period),
    ]
    return dg.MaterializeResult(check_results=checks, metadata={
        "dagster/row_count": summary.charge_count,
        "contracts": summary.contracts,
        "amount_unrounded": money_text({k: shown(v) for k, v in summary.totals_by_currency().items()}),
        "unrated_requests": summary.unrated_requests,
        "unrated_orgs": ", ".join(summary.unrated_orgs) or "none",
        # a month already issued keeps the prices it was issued with (stores/plans.plans_for_month)
        "plans_kept_as_issued": ", ".join(summary.plans_kept_as_issued) or "none",
        "usage_alerts": len(summary.alerts),
        "largest_charges": markdown_table(
            ["contract", "description", "quantity", "unit price", "amount"],
            [(c.contract_id, c.description, c.quantity, shown(c.unit_price), shown(c.amount)) for c in preview],
        ),
        "usage_cap_alerts": markdown_table(
            ["contract", "meter", "level", "cap", "used"],
            [(a.contract_id, a.meter, a.level, a.cap, a.used) for a in summary.alerts[:20]],
        ),
    })


def _renewal_check(db_url: str, period: Period) -> dg.AssetCheckResult:
    with connect(db_url) as conn:
        finding = renewal_notices(conn, period)
    return dg.AssetCheckResult(check_name="renewal_notices", passed=finding.passed, severity=dg.AssetCheckSeverity.WARN,
                               metadata={**finding.counts, "contracts": markdown_table(
                                   ["contract", "org", "ends", "days left"], finding.rows)})


def _rated_once_check(db_url: str, period: Period) -> dg.AssetCheckResult:
    with connect(db_url) as conn:
        finding = rollups_rated_once(conn, period)
    return dg.AssetCheckResult(check_name="rollups_rated_once", passed=finding.passed,
                               severity=dg.AssetCheckSeverity.ERROR, metadata={**finding.counts, "problems": markdown_table(
                                   ["day", "org", "chain", "problem", "rollup requests", "accounted"], finding.rows[:50])})


def shown(value: Decimal) -> Decimal:
    """Display only: exact shares can carry dozens of digits; the stored values keep them all.
    Trailing zeros go, but never into an exponent (normalize() alone showed 450 as 4.5E+2)."""
    if not value:
        return Decimal(0)
    short = value.quantize(Decimal("1e-6")).normalize()
    return short.quantize(Decimal(1)) if short.as_tuple().exponent > 0 else short
