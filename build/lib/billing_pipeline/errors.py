"""Errors a person can act on: each names the setting, row or partition at fault."""


class BillingError(Exception):
    """Base class; the CLI prints these as one line instead of a stack trace."""


class ConfigError(BillingError):
    """A setting is missing or wrong (names the environment variable)."""


class StoreUnavailableError(BillingError):
    """A store (ClickHouse, PostgreSQL) cannot be reached (names the setting that points to it)."""


class MissingDataError(BillingError):
    """An input partition is missing (names the partition)."""
