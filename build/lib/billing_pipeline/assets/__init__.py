"""Dagster assets: thin wrappers that read a partition, call ``billing_pipeline.steps`` and report."""
