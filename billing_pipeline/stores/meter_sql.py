"""ClickHouse SQL for the declared meters, spliced into the rollup queries.

Only validated identifiers (meter slugs, known columns) are written into SQL text; the method
weights travel as bound parameters (cu_methods, cu_weights, cu_default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..domain.meters import (EVENT_TYPES, NUMERIC_PROPERTIES, TEXT_PROPERTIES, ComputeUnitWeights, Meter,
                             load_compute_units, load_meters)

MARKER = "/* declared meters */"
ROW_FILTER = "/* row filter */"
COPY_FILTER = "/* copy filter */"

# The split at customers' local midnights reads only the orgs billed in other timezones, and only
# what was sent before the local midnight inside each UTC day (cut_keys 'org|day' -> cut_ms).
# `org_id IN` (a set, and org_id follows the day in requests_raw's sort key) lets ClickHouse skip
# the other orgs' granules; has(array, org_id) was evaluated on every row of the window.
_BEFORE_CUT_ROWS = ("AND org_id IN {tz_orgs:Array(String)} AND toUnixTimestamp64Milli(timestamp) < "
                    "transform(concat(org_id, '|', toString(toDate(timestamp))), {cut_keys:Array(String)}, "
                    "{cut_ms:Array(Int64)}, toInt64(0))")
_TZ_ROWS = "AND org_id IN {tz_orgs:Array(String)}"
_BEFORE_CUT_COPIES = ("AND toUnixTimestamp64Milli(copy.1) < transform(concat(copy.2, '|', toString(toDate(copy.1))), "
                      "{cut_keys:Array(String)}, {cut_ms:Array(Int64)}, toInt64(0))")

Column = Callable[[str], str]


def _raw(name: str) -> str:
    # Qualified, because the rollup query aliases aggregates with raw column names (bytes_out).
    return f"requests_raw.{name}"


# In usage_duplicates.sql each copy of a request is a tuple; these are its positions.
COPY_FIELDS = ("timestamp", "org_id", "project_id", "chain", "http_status", "bytes_out", "method", "latency_ms",
               "api_key_id")


def _copy(name: str) -> str:
    return f"copy.{COPY_FIELDS.index(name) + 1}"


def _value(prop: str, column: Column) -> str:
    if prop == "$.compute_units":
        return (f"transform({column('method')}, {{cu_methods:Array(String)}}, {{cu_weights:Array(UInt64)}}, "
                "{cu_default:UInt64})")
    return column(NUMERIC_PROPERTIES.get(prop) or TEXT_PROPERTIES[prop])


def aggregate(meter: Meter, column: Column = _raw) -> str:
    event_filter = EVENT_TYPES[meter.event_type]
    cond = f"{column(event_filter[0])} {event_filter[1]} {event_filter[2]}" if event_filter else None
    value = _value(meter.value_property, column) if meter.value_property else None
    if meter.aggregation == "COUNT":
        return f"countIf({cond})" if cond else "count()"
    function = {"SUM": "sum", "MAX": "max", "UNIQUE_COUNT": "uniqExact"}.get(meter.aggregation)
    if function:
        return f"{function}If({value}, {cond})" if cond else f"{function}({value})"
    # LATEST: the value of the last event of the day
    return f"argMaxIf({value}, {column('timestamp')}, {cond})" if cond else f"argMax({value}, {column('timestamp')})"


@dataclass(frozen=True)
class MeterSet:
    meters: tuple[Meter, ...]
    weights: ComputeUnitWeights

    @classmethod
    def load(cls) -> "MeterSet":
        return cls(tuple(load_meters()), load_compute_units())

    @property
    def columns(self) -> list[str]:
        return [m.column for m in self.meters]

    @property
    def additive_columns(self) -> list[str]:
        return [m.column for m in self.meters if m.additive]

    def parameters(self) -> dict:
        if not any(m.value_property == "$.compute_units" for m in self.meters):
            return {}
        methods = sorted(self.weights.methods)
        return {"cu_methods": methods, "cu_weights": [self.weights.methods[m] for m in methods],
                "cu_default": self.weights.default}

    def deliveries_sql(self, template: str, before_local_midnight: bool = False) -> str:
        lines = "".join(f",\n    {aggregate(m)} AS {m.column}" for m in self.meters)
        return template.replace(MARKER, lines).replace(ROW_FILTER, _BEFORE_CUT_ROWS if before_local_midnight else "")

    def direct_totals_sql(self, template: str) -> str:
        """usage_direct_totals.sql with the additive meters: over the rows, over the first copies, summed."""
        additive = [m for m in self.meters if m.additive]
        return (template.replace(MARKER, "".join(f", {aggregate(m)} AS {m.column}" for m in additive))
                .replace("/* copy meters */", "".join(f", {aggregate(m, _copy)} AS {m.column}" for m in additive))
                .replace("/* meter sums */", "".join(f", sum({m.column}) AS {m.column}" for m in additive)))

    def duplicates_sql(self, template: str, before_local_midnight: bool = False) -> str:
        lines = "".join(f",\n    {aggregate(m, _copy)} AS {m.column}" for m in self.meters if m.additive)
        sql = template.replace(MARKER, lines)
        if before_local_midnight:
            return sql.replace(ROW_FILTER, _TZ_ROWS).replace(COPY_FILTER, _BEFORE_CUT_COPIES)
        return sql.replace(ROW_FILTER, "").replace(COPY_FILTER, "")
