"""Time partitions, all UTC with one fixed start: daily for usage, monthly for everything billed."""

import dagster as dg

BILLING_START_DATE = "2025-01-01"

daily_partitions = dg.DailyPartitionsDefinition(start_date=BILLING_START_DATE, timezone="UTC")
monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=BILLING_START_DATE, timezone="UTC")
