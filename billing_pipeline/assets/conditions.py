"""Automation conditions shared by the sinks.

A sink sends money to customers, so it runs once per month, by itself, only when the month is
complete and nothing upstream has failed a blocking check; a later re-run upstream (a late day,
a dispute) must never re-issue: correcting an issued month is the dispute flow's job.
"""

import dagster as dg

AC = dg.AutomationCondition


def _upstream_complete(ignore: dg.AssetSelection) -> dg.AutomationCondition:
    """Evaluated on the sink's month: its drafts exist; every blocking check on the drafts, the
    rated charges and the daily rollups has passed; and no day of the month is missing."""
    rated_level = (~AC.any_deps_missing() & AC.all_deps_blocking_checks_passed()).ignore(ignore)  # on rated_charges
    drafts_level = AC.all_deps_blocking_checks_passed() & AC.all_deps_match(rated_level)  # on invoice_drafts
    return (~AC.any_deps_missing() & AC.all_deps_blocking_checks_passed()
            & AC.all_deps_match(drafts_level)).with_label("month complete, blocking checks passed")


def issue_once(ignore: dg.AssetSelection) -> dg.AutomationCondition:
    """The latest month, once: true on the tick where the month's sink partition is missing and
    everything upstream is complete, then never again for that month (not after a failure either:
    a failed issue is re-run from the UI after its reason is fixed). Earlier months: a backfill."""
    return (
        AC.in_latest_time_window()
        & AC.missing().newly_true().since_last_handled().with_label("not issued, not yet requested")
        & _upstream_complete(ignore)
        & ~AC.in_progress()
    ).with_label("issue once when the month is complete")
