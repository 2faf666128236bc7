"""usage_rollups: daily usage per (day, org, project, chain), aggregated inside ClickHouse."""

import warnings
from datetime import timedelta

import dagster as dg

from ..resources import BillingDatabase, ClickHouseResource, OpenMeterResource
from ..steps.openmeter_usage import roll_up_from_openmeter
from ..steps.quarantine import quarantined_by_reason, rows_out_of_range
from ..steps.reconciliation import late_raw_rows, rollups_match_clickhouse
from ..steps.usage import roll_up_usage
from .partitions import daily_partitions
from .reporting import failures_as_messages, markdown_table

requests_raw = dg.AssetSpec(
    "requests_raw",
    description="Raw API gateway request log in ClickHouse (one row per delivery; request_id is the dedup key).",
    group_name="usage",
    kinds={"clickhouse"},
    owners=["team:platform"],  # the API gateway writes it
)


class RollupConfig(dg.Config):
    dedup_lookback_hours: int = 24
    """How far before the window copies of a request are looked for (they decide its day)."""
    allow_empty_days: bool = False
    """A day with no raw rows is an ingestion gap unless this says it really had no traffic."""


# backfill_policy is flagged beta in Dagster 1.13 but is the supported way to run a month of
# daily partitions as one run; the flag's warning is not for operators.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")


# on_cron asks for yesterday once, at 02:00: a rollup that failed then (ClickHouse or PostgreSQL
# unreachable, the gateway's rows late) was never asked again, and its month waited on a red
# partition until someone noticed. A failed day of the last two is asked again every hour.
RETRY_A_FAILED_DAY = (
    dg.AutomationCondition.in_latest_time_window(timedelta(days=2))
    & dg.AutomationCondition.execution_failed()
    & dg.AutomationCondition.cron_tick_passed("0 * * * *", "UTC").since_last_handled()
    & ~dg.AutomationCondition.in_progress()
).with_label("failed: again every hour for two days")


@dg.asset(
    deps=[requests_raw],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    # requests_raw is the gateway's table, outside Dagster: no materialization of it is ever recorded,
    # so on_cron waiting for its deps to update since the tick never rolled a day up by itself
    automation_condition=(dg.AutomationCondition.on_cron("0 2 * * *", "UTC") | RETRY_A_FAILED_DAY).ignore(
        dg.AssetSelection.assets(requests_raw.key)),
    group_name="usage",
    owners=["team:billing-data"],
    kinds={"clickhouse", "postgres"},
    check_specs=[dg.AssetCheckSpec("no_quarantined_rows", asset="usage_rollups",
                                   description="Every raw row of the days can be billed (request, org and project "
                                               "ids present and well-formed, a known chain, a real HTTP status and "
                                               "byte count), and no row in ClickHouse is stamped in the future or "
                                               "before 2000, where no daily rollup would read it."),
                 # blocking: a rollup that disagrees with ClickHouse must not reach an invoice
                 dg.AssetCheckSpec("rollups_match_clickhouse", asset="usage_rollups", blocking=True,
                                   description="Per day, the rollups' requests, successful requests and bytes out "
                                               "in PostgreSQL equal a direct ClickHouse aggregation.")],
)
def usage_rollups(
    context: dg.AssetExecutionContext, config: RollupConfig, clickhouse: ClickHouseResource, billing_db: BillingDatabase,
    openmeter: OpenMeterResource,
) -> dg.MaterializeResult:
    """Requests, successful requests, errors and bytes out per (day, project, chain), deduplicated
    on request_id. A backfill of many days runs as one ClickHouse query, not one per day."""
    window = context.partition_time_window
    with failures_as_messages():
        client = openmeter.get_client()
        if client is not None:  # the optional OpenMeter source
            summary = roll_up_from_openmeter(client, billing_db.get_url(), window.start, window.end,
                                             allow_empty_days=config.allow_empty_days, run_id=context.run.run_id)
        else:
            summary = roll_up_usage(
                clickhouse.get_store(), billing_db.get_url(), window.start, window.end,
                dedup_lookback_hours=config.dedup_lookback_hours, allow_empty_days=config.allow_empty_days,
                run_id=context.run.run_id,
            )
        if client is None:
            match = rollups_match_clickhouse(clickhouse.get_store(), billing_db.get_url(), window.start, window.end,
                                             config.dedup_lookback_hours)
        by_reason = quarantined_by_reason(billing_db.get_url(), window.start.date(), window.end.date())
        out_of_range = rows_out_of_range(clickhouse.get_store()) if client is None else []
    reconciled = dg.AssetCheckResult(check_name="rollups_match_clickhouse", passed=True,
                                     metadata={"source": "OpenMeter: no ClickHouse to compare with"}) \
        if client is not None else dg.AssetCheckResult(
            check_name="rollups_match_clickhouse", passed=match.passed, severity=dg.AssetCheckSeverity.ERROR,
            metadata={**match.counts, "differences": markdown_table(
                ["day", "meter", "ClickHouse", "PostgreSQL", "difference"], match.rows[:50])})
    return dg.MaterializeResult(check_results=[dg.AssetCheckResult(
        check_name="no_quarantined_rows", passed=summary.quarantined_rows == 0 and not out_of_range,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"quarantined_rows": summary.quarantined_rows,
                  "quarantined_by_reason": dg.MetadataValue.json(by_reason),
                  "out_of_range_rows": dg.MetadataValue.json({r.reason: r.raw_rows for r in out_of_range}),
                  "out_of_range": markdown_table(["reason", "rows", "earliest", "latest"],
                                                 [(r.reason, r.raw_rows, r.earliest, r.latest) for r in out_of_range]),
                  "see": "quarantined_usage (day, reason, org, project, chain)"},
    ), reconciled], metadata={
        "dagster/row_count": summary.rows,
        "days": len(summary.days),
        "requests": summary.requests,
        "raw_rows": summary.raw_rows,
        "duplicate_rows_removed": summary.duplicate_rows,
        "quarantined_rows": summary.quarantined_rows,
        "bytes_out": summary.bytes_out,
        "source_engine": summary.source_engine,
        "source_query_sha256": summary.source_query_sha256,
        "per_day": markdown_table(
            ["day", "raw rows", "duplicates", "quarantined", "requests", "bytes out"],
            [(d.day, d.raw_rows, d.duplicate_rows, d.quarantined_rows, d.requests, d.bytes_out) for d in summary.days],
        ),
        "top_org_chains": markdown_table(
            ["org", "chain", "requests", "bytes out"],
            [(r["org_id"], r["chain"], r["requests_sum"], r["bytes_out_sum"]) for r in summary.preview.to_pylist()],
        ),
    })


@dg.asset_check(asset=usage_rollups, description="Raw rows that reached ClickHouse for a day after that day was rolled "
                                                 "up (late deliveries): counted per day over the last 35 days. "
                                                 "Re-run those days, then the dispute flow.",
                automation_condition=dg.AutomationCondition.cron_tick_passed("15 * * * *", "UTC"))
def no_late_raw_rows(clickhouse: ClickHouseResource, billing_db: BillingDatabase) -> dg.AssetCheckResult:
    finding = late_raw_rows(clickhouse.get_store(), billing_db.get_url())
    return dg.AssetCheckResult(passed=finding.passed, severity=dg.AssetCheckSeverity.WARN, metadata={
        **finding.counts, "days": markdown_table(["day", "rows rolled up", "rows now", "late rows", "rolled up at"],
                                                 finding.rows[:50])})
