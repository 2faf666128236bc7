"""Time partitions, all UTC with one fixed start: daily for usage, monthly for everything billed."""

import dagster as dg

from ..domain.periods import BILLING_START

BILLING_START_DATE = BILLING_START.isoformat()

daily_partitions = dg.DailyPartitionsDefinition(start_date=BILLING_START_DATE, timezone="UTC")
monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=BILLING_START_DATE, timezone="UTC")
