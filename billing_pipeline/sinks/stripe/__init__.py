"""Stripe: pre-rated invoices issued exactly once, and Stripe's events applied to our invoices."""
