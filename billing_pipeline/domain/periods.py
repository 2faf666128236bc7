"""Billing periods: half-open UTC windows [start, end)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

# The first billed day (UTC): no usage before it is rolled up or billed, not even the hours a
# customer ahead of UTC counts in its first local month (its service starts with the billing).
BILLING_START = date(2025, 1, 1)


@dataclass(frozen=True)
class Period:
    start: date  # first day, inclusive
    end: date  # first day after the period, exclusive

    @classmethod
    def month_of(cls, day: date) -> "Period":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        return cls(start, end)

    @classmethod
    def parse_month(cls, text: str) -> "Period":
        """Accepts '2026-10' or a Dagster monthly partition key '2026-10-01'."""
        try:
            parsed = datetime.strptime(text[:7], "%Y-%m").date()
        except ValueError:
            raise ValueError(f"month {text!r} is not YYYY-MM or YYYY-MM-01") from None
        return cls.month_of(parsed)

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days)]

    @property
    def start_utc(self) -> datetime:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=timezone.utc)

    @property
    def end_utc(self) -> datetime:
        return datetime(self.end.year, self.end.month, self.end.day, tzinfo=timezone.utc)

    @property
    def label(self) -> str:
        return self.start.strftime("%Y-%m")


def missing_days(expected: list[date], present: set[date]) -> list[date]:
    return [d for d in expected if d not in present]
