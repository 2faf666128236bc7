"""Sinks: where issued invoices go (Stripe, Parasut), with the outbox and rate limits they share."""
