"""Dagster resources: one adapter per outside system, configured from environment variables."""

from .clickhouse import ClickHouseResource
from .openmeter import OpenMeterResource
from .postgres import BillingDatabase
from .stripe import StripeResource

__all__ = ["ClickHouseResource", "BillingDatabase", "OpenMeterResource", "StripeResource"]
