"""The usage store as a Dagster resource: a ClickHouse server when a URL is set, else chdb."""

import dagster as dg

from ..stores.clickhouse import UsageStore, ensure_schema, open_usage_store


class ClickHouseResource(dg.ConfigurableResource):
    """ClickHouse holding ``requests_raw``.

    ``url``/``user``/``password`` come from BILLING_CLICKHOUSE_* through ``EnvVar``; with no URL
    the embedded chdb engine at ``chdb_path`` (default: the state directory) runs the same SQL.
    """

    url: str | None = None
    user: str | None = None
    password: str | None = None
    chdb_path: str | None = None

    def get_store(self) -> UsageStore:
        store = open_usage_store(self.url, self.user, self.password, self.chdb_path)
        ensure_schema(store)
        return store
