"""Dagster resources: one adapter per outside system, configured from environment variables."""

from .clickhouse import ClickHouseResource
from .openmeter import OpenMeterResource
from .postgres import BillingDatabase

__all__ = ["ClickHouseResource", "BillingDatabase", "OpenMeterResource"]
