"""Adapters to the stores (PostgreSQL, ClickHouse/chdb) as plain Python, without Dagster.

The Dagster resources in ``billing_pipeline.resources`` wrap these, so the CLI, the benchmark and
the tests use exactly the same code paths as the assets.
"""
