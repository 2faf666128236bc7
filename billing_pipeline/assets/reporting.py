"""Shared helpers for assets: clean failures and metadata a person can read in the UI."""

from contextlib import contextmanager
from decimal import Decimal
from typing import Iterable, Iterator, Sequence

import dagster as dg
import psycopg

from ..errors import BillingError


@contextmanager
def failures_as_messages() -> Iterator[None]:
    """Turn a BillingError into a Dagster Failure whose description is the one-line message; so
    too the billing database going away mid-step (a restart, a failover), whose libpq message
    spans several lines."""
    try:
        yield
    except BillingError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
        raise dg.Failure(description=f"lost the connection to PostgreSQL (BILLING_DATABASE_URL) during the step: "
                                     f"{reason}; its open transaction was rolled back, run it again",
                         allow_retries=False) from None


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> dg.MetadataValue:
    def cell(v: object) -> str:
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


def outbox_check(db_url: str, sink: str) -> dg.AssetCheckResult:
    from ..steps.reconciliation import stuck_outbox
    from ..stores.postgres import connect

    with connect(db_url) as conn:
        finding = stuck_outbox(conn, sink)
    return dg.AssetCheckResult(check_name="outbox_not_stuck", passed=finding.passed,
                               severity=dg.AssetCheckSeverity.ERROR, metadata={**finding.counts, "oldest": markdown_table(
                                   ["key", "invoice", "status", "attempts", "since", "last error"], finding.rows)})


def money_text(totals: dict[str, Decimal]) -> str:
    """Money as text, never float: '1,234.56 USD, 25,000.00 TRY'."""
    return ", ".join(f"{amount:,} {currency}" for currency, amount in sorted(totals.items())) or "0"
