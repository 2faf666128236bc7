"""Sensors: what starts runs without a person. Sinks (Stripe, Parasut) join here later."""
