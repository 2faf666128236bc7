"""The FX sources (TCMB bulletins, ECB reference rates) as a Dagster resource."""

from decimal import Decimal

import dagster as dg

from ..steps.fx import DEFAULT_ECB_BASE, DEFAULT_TCMB_BASE, FxSources


class FxSourcesResource(dg.ConfigurableResource):
    """BILLING_TCMB_BASE_URL / BILLING_ECB_BASE_URL override the public addresses;
    BILLING_FX_MAX_DIVERGENCE is the share (0.02 = 2%) beyond which TCMB and ECB disagree;
    ``timeout_seconds`` is how long one fetch may take."""

    tcmb_base_url: str = DEFAULT_TCMB_BASE
    ecb_base_url: str = DEFAULT_ECB_BASE
    max_divergence: str = "0.02"
    timeout_seconds: float = 10.0

    def sources(self) -> FxSources:
        return FxSources(self.tcmb_base_url, self.ecb_base_url, timeout=self.timeout_seconds)

    @property
    def divergence_limit(self) -> Decimal:
        return Decimal(self.max_divergence)
