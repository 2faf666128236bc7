"""Pure billing domain: money, periods, pricing and invoicing.

Nothing in this package imports Dagster or talks to a database, so every rule here is unit-tested
on its own and reusable outside the orchestrator.
"""
