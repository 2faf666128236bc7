"""OpenMeter as an optional usage source (BILLING_OPENMETER_URL / BILLING_OPENMETER_TOKEN)."""

import dagster as dg

from ..stores.openmeter import OpenMeterClient


class OpenMeterResource(dg.ConfigurableResource):
    """When ``url`` is set, usage_rollups reads daily meter values from OpenMeter's meter query API
    instead of ClickHouse; the rollup rows are the same."""

    url: str | None = None
    token: str | None = None

    def get_client(self) -> OpenMeterClient | None:
        return OpenMeterClient(self.url, self.token) if self.url else None
