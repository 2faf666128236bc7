"""Deterministic synthetic usage, generated inside ClickHouse (same rows on chdb and a server)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from ..domain.chains import known_chains
from ..stores.clickhouse import UsageStore, ensure_schema, sql_text

_BATCH_EVENTS = 20_000_000  # bounds ClickHouse's insert memory on a small machine


@dataclass(frozen=True)
class UsageSpec:
    start: date
    days: int
    events: int  # distinct requests; delivered rows are events * (1 + dup_per_mille / 1000) on average
    orgs: int = 40
    projects: int = 120
    chains: tuple[str, ...] = field(default_factory=lambda: chain_names(8))
    seed: int = 42
    dup_per_mille: int = 5

    def __post_init__(self) -> None:
        if self.projects < self.orgs:
            raise ValueError(f"projects ({self.projects}) must be >= orgs ({self.orgs}): every org owns a project")
        if not self.chains:
            raise ValueError("chains must name at least one chain")
        if self.days < 1 or self.events < 0:
            raise ValueError("days must be >= 1 and events >= 0")


def chain_names(count: int) -> tuple[str, ...]:
    """The first ``count`` chains of the catalog (the popular ones first)."""
    chains = tuple(known_chains())
    if not 1 <= count <= len(chains):
        raise ValueError(f"chains: between 1 and {len(chains)} (catalog/chains.yaml), got {count}")
    return chains[:count]


def org_ids(orgs: int) -> list[str]:
    return [f"org_{i:04d}" for i in range(orgs)]


def clear_months(store: UsageStore, spec: UsageSpec) -> None:
    """Drop the monthly partitions the spec writes to, so regenerating never doubles rows."""
    months = {}
    for offset in range(spec.days):
        day = date.fromordinal(spec.start.toordinal() + offset)
        months[f"{day.year:04d}{day.month:02d}"] = None
    for partition_id in months:
        store.command("ALTER TABLE requests_raw DROP PARTITION ID {partition_id:String}",
                      {"partition_id": partition_id})


def generate_usage(store: UsageStore, spec: UsageSpec) -> int:
    """Insert the spec's requests; returns the number of delivered rows now in its window."""
    ensure_schema(store)
    clear_months(store, spec)
    start = datetime(spec.start.year, spec.start.month, spec.start.day, tzinfo=timezone.utc)
    sql = sql_text("generate_requests")
    for offset in range(0, spec.events, _BATCH_EVENTS):
        store.command(sql, {
            "start": start, "days": spec.days, "orgs": spec.orgs, "projects": spec.projects,
            "chains": list(spec.chains), "seed": spec.seed,
            "dup_per_mille": spec.dup_per_mille, "offset": offset,
            "events": min(_BATCH_EVENTS, spec.events - offset),
        })
    rows = store.query_arrow(
        "SELECT count() AS n FROM requests_raw WHERE timestamp >= {s:DateTime64(3, 'UTC')}", {"s": start})
    return rows.column("n")[0].as_py()
