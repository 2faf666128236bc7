"""Parasut as a Dagster resource: live when every credential is configured, otherwise a dry run."""

import dagster as dg

from ..sinks.parasut.client import ParasutClient, ParasutCredentials

DEFAULT_BASE_URL = "https://api.parasut.com"


class ParasutResource(dg.ConfigurableResource):
    """BILLING_PARASUT_* settings (secrets through EnvVar). ``poll_interval_seconds`` spaces the
    polls of e-document jobs and PDFs; ``timeout_seconds`` is how long one request may take."""

    base_url: str = DEFAULT_BASE_URL
    company_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    username: str | None = None
    password: str | None = None
    dry_run: bool = False
    workers: int = 4
    requests_per_window: int = 10
    window_seconds: float = 10.0
    poll_interval_seconds: float = 2.0
    timeout_seconds: float = 30.0

    @property
    def is_dry_run(self) -> bool:
        return self.dry_run or not all((self.company_id, self.client_id, self.client_secret, self.username,
                                        self.password))

    def client(self, db_url: str) -> ParasutClient | None:
        if self.is_dry_run:
            return None
        return ParasutClient(ParasutCredentials(self.base_url, self.company_id, self.client_id, self.client_secret,
                                                self.username, self.password), db_url,
                             requests_per_window=self.requests_per_window, window_seconds=self.window_seconds,
                             timeout=self.timeout_seconds)
