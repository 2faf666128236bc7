"""Polls Stripe's invoice events and applies them: issued, paid, payment failed, voided."""

import dagster as dg

from ..resources import BillingDatabase, StripeResource
from ..sinks.stripe.events import sync_events
from ..sinks.stripe.gateway import StripeRefused, StripeUnavailable


@dg.sensor(
    name="stripe_payment_events",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads /v1/events after the last event applied (the cursor) and updates invoice status and "
                "the ledger; an event already applied is skipped by its id.",
)
def stripe_payment_events(context: dg.SensorEvaluationContext, stripe: StripeResource,
                          billing_db: BillingDatabase) -> dg.SkipReason:
    gateway = stripe.gateway()
    if gateway is None:
        return dg.SkipReason("Stripe is in dry-run mode (no BILLING_STRIPE_API_KEY): no events to read")
    try:
        result = sync_events(billing_db.get_url(), gateway, context.cursor or None)
    except (StripeRefused, StripeUnavailable) as exc:
        return dg.SkipReason(f"Stripe events not read this tick: {exc}")
    if result.cursor:
        context.update_cursor(result.cursor)
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(result.applied.items())) or "no new events"
    return dg.SkipReason(f"{summary}; {result.skipped_seen} already applied; cursor {result.cursor}")
