"""Usage on the customer's calendar days, from UTC daily rollups and one split per UTC day.

Each UTC day D contains (at most) one local midnight of a timezone: ``cut(D)``. The rollups keep
D's usage whole and, for orgs billed in another timezone, the part before ``cut(D)``. The part
after the cut belongs to the local date of the cut; the part before it to the local day before.
So a customer in Istanbul (UTC+3) is billed a request sent at 22:00 UTC on 31 October in
November, and one sent at 22:00 UTC on 30 September in October.

On the day a zone changes its offset a UTC day can hold two local midnights; the hour between
them is then counted on the earlier local day (documented limit; no zone the product serves
changes offset near midnight UTC except Europe/London and Africa/Casablanca).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from .terms import Usage

UTC = timezone.utc


def local_midnight_in(day: date, tz: str) -> datetime:
    """The UTC instant of the local midnight that falls within UTC day ``day``."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, time(), UTC)
    for local in (day - timedelta(days=1), day, day + timedelta(days=1)):
        instant = datetime.combine(local, time(), zone).astimezone(UTC)
        if start <= instant < start + timedelta(days=1):
            return instant
    return start  # no local midnight inside the day (cannot happen for whole-day zones)


def to_local_days(full: dict[date, Usage], before_cut: dict[date, Usage], tz: str) -> dict[date, Usage]:
    """Usage per local calendar day from per-UTC-day totals and their part before the local midnight."""
    local: dict[date, Usage] = {}

    def add(day: date, key, value: int) -> None:
        if value:
            bucket = local.setdefault(day, {})
            bucket[key] = bucket.get(key, 0) + value

    zone = ZoneInfo(tz)
    for day, usage in full.items():
        cut = local_midnight_in(day, tz)
        after_day = cut.astimezone(zone).date()
        before = before_cut.get(day, {})
        for key, value in usage.items():
            add(after_day, key, value - before.get(key, 0))
            add(after_day - timedelta(days=1), key, before.get(key, 0))
    return local


def cut_parameters(orgs: dict[str, str], days: list[date]) -> dict:
    """ClickHouse parameters: for each (org, UTC day) the local midnight inside it, in epoch ms."""
    keys, cuts = [], []
    for org, tz in sorted(orgs.items()):
        for day in days:
            keys.append(f"{org}|{day.isoformat()}")
            cuts.append(int(local_midnight_in(day, tz).timestamp() * 1000))
    return {"tz_orgs": sorted(orgs), "cut_keys": keys, "cut_ms": cuts}
