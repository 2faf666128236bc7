"""Dagster resources: one adapter per outside system, configured from environment variables."""

from .clickhouse import ClickHouseResource
from .postgres import BillingDatabase

__all__ = ["ClickHouseResource", "BillingDatabase"]
