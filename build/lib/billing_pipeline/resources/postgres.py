"""The billing database as a Dagster resource: BILLING_DATABASE_URL, or embedded PostgreSQL."""

import dagster as dg

from ..stores.postgres import billing_database_url, migrate, validate_url

_migrated: set[str] = set()


class BillingDatabase(dg.ConfigurableResource):
    """PostgreSQL holding plans, contracts, rollups, charges, invoices and the ledger.

    ``url`` comes from BILLING_DATABASE_URL through ``EnvVar``; when it is unset the embedded
    server under the state directory is started. The schema is migrated on first use per process.
    """

    url: str | None = None

    def get_url(self) -> str:
        url = validate_url(self.url, "BILLING_DATABASE_URL") if self.url else billing_database_url()
        if url not in _migrated:
            migrate(url)
            _migrated.add(url)
        return url
