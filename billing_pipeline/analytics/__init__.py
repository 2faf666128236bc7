"""The analysts' dbt project (dbt_models/) as Dagster assets: its manifest, its connection."""
