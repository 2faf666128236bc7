"""Stripe as a Dagster resource: live when an API key is configured, otherwise a dry run."""

import dagster as dg

from ..sinks.stripe.gateway import StripeGateway


class StripeResource(dg.ConfigurableResource):
    """BILLING_STRIPE_API_KEY (through EnvVar) switches the sink from dry run to live.

    ``api_base`` points the SDK at another Stripe-compatible server (tests, stripe-mock);
    ``max_ops_per_second`` defaults to Stripe's limit for the key (25 test mode, 100 live).
    """

    api_key: str | None = None
    api_base: str | None = None
    max_ops_per_second: float | None = None
    concurrency: int = 16
    timeout_seconds: float = 30.0
    dry_run: bool = False

    @property
    def is_dry_run(self) -> bool:
        return self.dry_run or not self.api_key

    def gateway(self) -> StripeGateway | None:
        if self.is_dry_run:
            return None
        return StripeGateway(self.api_key, self.api_base, self.max_ops_per_second, self.timeout_seconds)
