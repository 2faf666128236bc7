"""What a sink checks before it sends a month to customers: the month's blocking checks, computed
again from the database at that moment.

The sinks' automation waits for the blocking checks to pass, but Dagster (1.13) keeps one result
per check, not one per partition: a day's rollup check passing cleared another day's failure, and
a draft edited after drafting kept its stale green drafts_add_up. Partitioned checks are a preview
feature there; a sink that moves money asks the database itself."""

from __future__ import annotations

from ..domain.periods import Period
from ..errors import BillingError
from ..stores.postgres import connect
from .invoicing import draft_problems, rating_staleness
from .reconciliation import lira_lines_match_rate, rollups_rated_once


def blocking_problems(db_url: str, period: Period) -> list[str]:
    """The rating's freshness, drafts_add_up, lira_lines_match_rate and rollups_rated_once for the
    month, as one line each."""
    problems = [f"{invoice}: {problem}" for invoice, problem in draft_problems(db_url, period)]
    with connect(db_url) as conn:
        # usage re-run or a contract changed since rating: the drafts bill what no longer holds (an
        # operator re-running one day in the UI, then the sink: 500 GB went unbilled)
        stale = rating_staleness(conn, period)
        if stale is not None:
            problems.insert(0, f"rated_charges: {stale}")
        for finding, name in ((rollups_rated_once(conn, period), "rollups_rated_once"),
                              (lira_lines_match_rate(conn, period), "lira_lines_match_rate")):
            problems += [f"{name}: " + ", ".join(str(v) for v in row if v is not None) for row in finding.rows]
    return problems


def refuse_unless_ready(sink: str, db_url: str, period: Period) -> None:
    """Stop the sink's run before any call when the month's blocking checks fail now."""
    problems = blocking_problems(db_url, period)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise BillingError(f"{sink} {period.label}: nothing sent: the month's blocking checks fail now "
                           f"({len(problems)}): {shown}. Fix the cause, re-materialize rated_charges and "
                           "invoice_drafts for the month, then run the sink again")
