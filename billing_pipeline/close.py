"""Close a billing month through Dagster: one run for all of the month's days, one for the month.

Runs go through the product's Dagster instance, so they, their asset materializations and their
metadata show in the UI exactly as if launched there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from .assets.analytics import analytics_monthly_marts, analytics_reference
from .assets.audit_snapshot import audit_snapshot
from .assets.fx_snapshot import fx_snapshot
from .assets.invoice_corrections import invoice_corrections
from .assets.invoice_drafts import invoice_drafts
from .assets.parasut_invoices import parasut_invoices
from .assets.partitions import daily_partitions, monthly_partitions
from .assets.rated_charges import rated_charges
from .assets.stripe_invoices import stripe_invoices
from .assets.usage_rollups import usage_rollups
from .definitions import defs
from .domain.periods import BILLING_START, Period
from .errors import BillingError


class RunFailedError(BillingError):
    pass


@dataclass(frozen=True)
class CloseResult:
    rollup_run_id: str
    billing_run_id: str
    # checks that did not pass, "asset.check (SEVERITY)": the close succeeds past a non-blocking one
    # (quarantined rows, usage no contract rates), which only the UI showed
    failed_checks: tuple[str, ...] = ()


def failed_checks(*results: dg.ExecuteInProcessResult) -> tuple[str, ...]:
    return tuple(f"{e.asset_key.to_user_string()}.{e.check_name} ({e.severity.value})"
                 for r in results for e in r.get_asset_check_evaluations() if not e.passed)


def _raise_if_failed(result: dg.ExecuteInProcessResult, what: str) -> None:
    if result.success:
        return
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            message = error.message.strip() if error else "unknown error"
            while error is not None and error.cause is not None:  # the user code's own error, not the wrapper
                error = error.cause
                message = error.message.strip()
            # dg.Failure carries our one-line description, and our own errors name what is at fault:
            # keep their text, not the class prefix.
            message = message.split(": ", 1)[1] if message.startswith(
                ("dagster._core.definitions.events.Failure", "billing_pipeline.errors.")) else message
            message = " ".join(message.split())  # one line, whatever the library's text (libpq's spans three)
            if message.startswith("dagster._core.errors.DagsterExecutionInterruptedError"):
                raise RunFailedError(
                    f"{what} interrupted in step {event.step_key} (run {result.run_id}); every step is safe to "
                    "run again (tested by killing each one): run the same command again")
            raise RunFailedError(f"{what} failed in step {event.step_key} (run {result.run_id}): {message}")
    raise RunFailedError(f"{what} failed (run {result.run_id})")


# The CLI prints its own progress and failures (one line each); Dagster's step log and stack traces
# stay in the run's event log, where the UI shows them.
_QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def rollup_days(period: Period) -> list[date]:
    """The UTC days a month's close rolls up: the month and one day on each side, which customers
    billed in other timezones reach into (UTC+3's October starts at 21:00 UTC on 30 September;
    UTC-4's ends at 04:00 UTC on 1 November). None before the billing start: no partition holds it."""
    return [d for d in (period.start - timedelta(days=1), *period.days(), period.end) if d >= BILLING_START]


def _rollup_run_config(rollup_config: dict | None) -> dict:
    return dict(_QUIET, ops={"usage_rollups": {"config": rollup_config}}) if rollup_config else _QUIET


def check_closable(period: Period) -> None:
    """A month can be closed once it has ended everywhere: its monthly partition exists and so
    does the daily partition of the next month's first day."""
    keys = monthly_partitions.get_partition_keys()
    edge = period.end.isoformat()  # the day after the month, the last it rolls up
    if period.start.isoformat() not in keys or edge not in daily_partitions.get_partition_keys():
        span = f"{keys[0][:7]} .. {keys[-1][:7]}" if keys else "none yet"
        raise BillingError(f"month {period.label} is not a closable billing month (monthly partitions: {span}; "
                           "a month can be closed once it has ended in every timezone, from its next month's 2nd day)")


def close_month(instance: dg.DagsterInstance, period: Period, rollup_config: dict | None = None,
                definitions: dg.Definitions | None = None) -> CloseResult:
    check_closable(period)
    job = (definitions or defs).resolve_implicit_global_asset_job_def()
    days = rollup_days(period)
    rollups = job.execute_in_process(
        instance=instance,
        asset_selection=[usage_rollups.key],
        tags={ASSET_PARTITION_RANGE_START_TAG: days[0].isoformat(),
              ASSET_PARTITION_RANGE_END_TAG: days[-1].isoformat()},
        run_config=_rollup_run_config(rollup_config),
        raise_on_error=False,
    )
    _raise_if_failed(rollups, f"usage_rollups {days[0]}..{days[-1]}")
    billing = job.execute_in_process(
        instance=instance,
        asset_selection=[fx_snapshot.key, rated_charges.key, invoice_drafts.key, audit_snapshot.key],
        partition_key=period.start.isoformat(),
        run_config=_QUIET,
        raise_on_error=False,
    )
    _raise_if_failed(billing, f"fx_snapshot/rated_charges/invoice_drafts/audit_snapshot {period.start}")
    return CloseResult(rollups.run_id, billing.run_id, failed_checks(rollups, billing))


SINKS = [stripe_invoices.key, parasut_invoices.key]


def issue_month(instance: dg.DagsterInstance, period: Period, definitions: dg.Definitions | None = None) -> str:
    """Run the month's sinks, as a backfill from the UI would (the sensor only issues the latest
    month, once). Each sink issues only what it has not issued; returns the run id."""
    check_closable(period)
    job = (definitions or defs).resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, asset_selection=SINKS, partition_key=period.start.isoformat(),
                                    run_config=_QUIET, raise_on_error=False)
    _raise_if_failed(result, f"stripe_invoices/parasut_invoices {period.start}")
    return result.run_id


def _day_ranges(days: list[date]) -> list[tuple[date, date]]:
    ranges: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if ranges and ranges[-1][1] + timedelta(days=1) == day:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


DISPUTE_MONTH_ASSETS = [rated_charges.key, invoice_drafts.key, *SINKS, invoice_corrections.key, audit_snapshot.key]


def check_dispute_days(period: Period, days: list[date]) -> None:
    """A dispute re-runs days of the month or its edge days, and at least one."""
    outside = [d for d in days if d not in rollup_days(period)]
    if not days or outside:
        raise BillingError(f"dispute {period.label}: give days of the month (or its edge days); "
                           f"not in it: {', '.join(d.isoformat() for d in outside) or 'none given'}")


def dispute_month(instance: dg.DagsterInstance, period: Period, days: list[date],
                  definitions: dg.Definitions | None = None, rollup_config: dict | None = None) -> list[str]:
    """The dispute backfill, as the UI's "these days and everything downstream" runs it: the days'
    usage_rollups again (each contiguous range in one run), then the month's rated_charges,
    invoice_drafts, the sinks (which issue nothing twice), invoice_corrections (credit notes and
    supplementary invoices for what changed) and a new audit_snapshot. Returns the run ids."""
    check_closable(period)
    check_dispute_days(period, days)
    job = (definitions or defs).resolve_implicit_global_asset_job_def()
    run_ids = []
    for first, last in _day_ranges(days):
        result = job.execute_in_process(
            instance=instance, asset_selection=[usage_rollups.key], run_config=_rollup_run_config(rollup_config),
            raise_on_error=False,
            tags={ASSET_PARTITION_RANGE_START_TAG: first.isoformat(), ASSET_PARTITION_RANGE_END_TAG: last.isoformat()})
        _raise_if_failed(result, f"usage_rollups {first}..{last}")
        run_ids.append(result.run_id)
    result = job.execute_in_process(instance=instance, asset_selection=DISPUTE_MONTH_ASSETS,
                                    partition_key=period.start.isoformat(), run_config=_QUIET, raise_on_error=False)
    _raise_if_failed(result, f"rated_charges..audit_snapshot {period.start}")
    run_ids.append(result.run_id)
    return run_ids


def build_marts(instance: dg.DagsterInstance, period: Period, definitions: dg.Definitions | None = None) -> list[str]:
    """The analyst marts for a month, as the automation sensor builds them: the reference models
    (seeds, staging views, invoice status and ageing), then the month's marts. Returns run ids."""
    job = (definitions or defs).resolve_implicit_global_asset_job_def()
    reference = job.execute_in_process(instance=instance, asset_selection=list(analytics_reference.keys),
                                       run_config=_QUIET, raise_on_error=False)
    _raise_if_failed(reference, "analytics reference models")
    monthly = job.execute_in_process(instance=instance, asset_selection=list(analytics_monthly_marts.keys),
                                     partition_key=period.start.isoformat(), run_config=_QUIET, raise_on_error=False)
    _raise_if_failed(monthly, f"analytics marts {period.start}")
    return [reference.run_id, monthly.run_id]
