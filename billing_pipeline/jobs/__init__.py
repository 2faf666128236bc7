"""Dagster jobs the data team launches by hand from the UI's Launchpad."""
