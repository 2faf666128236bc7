"""The work behind each asset, as plain functions over the stores.

An asset reads its partition from Dagster, calls one function here and turns the returned summary
into metadata. The CLI, the benchmark and the tests call the same functions.
"""
