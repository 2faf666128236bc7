"""Meters: what is measured, declared in OpenMeter's meter format and validated before use.

Events are the rows of ``requests_raw``; a meter counts them or aggregates one of their properties
per (day, project, chain). The catalog lives in ``billing_pipeline/catalog/meters.yaml`` (and the
compute-unit weight of each method in ``compute_units.yaml``) so that a person can review what the
product bills.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import BillingError
from .catalog_files import CATALOG_DIR, load_catalog

# Event types and the filter each applies to requests_raw rows: (column, operator, value) or None.
EVENT_TYPES: dict[str, tuple[str, str, int] | None] = {
    "rpc_request": None,
    "rpc_request.success": ("http_status", "<", 400),
    "rpc_request.error": ("http_status", ">=", 400),
}
# JSON paths of an event and the requests_raw column they read ($.compute_units is derived).
NUMERIC_PROPERTIES = {"$.bytes_out": "bytes_out", "$.latency_ms": "latency_ms", "$.http_status": "http_status",
                      "$.compute_units": "compute_units"}
TEXT_PROPERTIES = {"$.chain": "chain", "$.method": "method", "$.api_key_id": "api_key_id"}
ADDITIVE = ("SUM", "COUNT")


class MeterFileError(BillingError):
    """A meter or weight file is invalid; the message names the file, the meter and the field."""


class Meter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    slug: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    description: str = ""
    event_type: str = Field(alias="eventType")
    aggregation: Literal["SUM", "COUNT", "MAX", "UNIQUE_COUNT", "LATEST"]
    value_property: str | None = Field(default=None, alias="valueProperty")
    group_by: dict[str, str] = Field(default_factory=dict, alias="groupBy")
    window_size: Literal["MINUTE", "HOUR", "DAY"] | None = Field(default=None, alias="windowSize")

    @field_validator("event_type")
    @classmethod
    def _known_event_type(cls, value: str) -> str:
        if value not in EVENT_TYPES:
            raise ValueError(f"unknown event type {value!r}; known: {', '.join(EVENT_TYPES)}")
        return value

    @field_validator("group_by")
    @classmethod
    def _per_chain(cls, value: dict[str, str]) -> dict[str, str]:
        if value != {"chain": "$.chain"}:
            raise ValueError("must be {chain: $.chain}: usage_rollups keep every meter per (day, project, chain)")
        return value

    @model_validator(mode="after")
    def _value_property_fits(self) -> "Meter":
        prop = self.value_property
        if self.aggregation == "COUNT":
            if prop is not None:
                raise ValueError("valueProperty: COUNT counts events and takes no valueProperty")
        elif prop is None:
            raise ValueError(f"valueProperty: required for aggregation {self.aggregation}")
        elif self.aggregation == "UNIQUE_COUNT":
            if prop not in NUMERIC_PROPERTIES and prop not in TEXT_PROPERTIES:
                raise ValueError(f"valueProperty: {prop!r} is not a property of the events; "
                                 f"known: {', '.join([*NUMERIC_PROPERTIES, *TEXT_PROPERTIES])}")
        elif prop not in NUMERIC_PROPERTIES:
            raise ValueError(f"valueProperty: {prop!r} is not a numeric property of the events; "
                             f"known: {', '.join(NUMERIC_PROPERTIES)}")
        return self

    @property
    def additive(self) -> bool:
        """Daily values add up to the month (and duplicate copies can be subtracted)."""
        return self.aggregation in ADDITIVE

    @property
    def column(self) -> str:
        return f"meter_{self.slug}"


class _MeterFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    meters: list[Meter]

    @field_validator("meters")
    @classmethod
    def _unique(cls, meters: list[Meter]) -> list[Meter]:
        seen = set()
        for m in meters:
            if m.slug in seen:
                raise ValueError(f"slug {m.slug!r} is declared twice")
            seen.add(m.slug)
        if not meters:
            raise ValueError("at least one meter is required")
        return meters


class ComputeUnitWeights(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    default: int = Field(ge=0)
    methods: dict[str, int] = Field(default_factory=dict)

    @field_validator("methods")
    @classmethod
    def _non_negative(cls, methods: dict[str, int]) -> dict[str, int]:
        for method, weight in methods.items():
            if weight < 0:
                raise ValueError(f"method {method!r}: weight {weight} is negative")
        return methods


def load_meters(path: Path | None = None) -> list[Meter]:
    return load_catalog(path or CATALOG_DIR / "meters.yaml", _MeterFile, MeterFileError, "meters", "slug",
                        "meter").meters


def load_compute_units(path: Path | None = None) -> ComputeUnitWeights:
    return load_catalog(path or CATALOG_DIR / "compute_units.yaml", ComputeUnitWeights, MeterFileError)
