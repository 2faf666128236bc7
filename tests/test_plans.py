"""The plan catalog is validated; an error names the file, the plan and the field."""

from __future__ import annotations

import textwrap

import pytest

from billing_pipeline.domain.meters import load_meters
from billing_pipeline.domain.plans import PlanFileError, load_plans

METERS = {m.slug for m in load_meters()}


def test_catalog_has_the_seed_templates():
    plans = load_plans(known_meters=METERS)
    assert {"free", "pro", "enterprise"} <= set(plans)
    assert (plans["free"].type, plans["pro"].type, plans["enterprise"].type) == ("METERED", "METERED", "FIXED")
    assert plans["growth"].type == "HYBRID" and plans["growth"].charges[0].included == 50_000_000


def _load(tmp_path, body):
    path = tmp_path / "plans.yaml"
    path.write_text(textwrap.dedent(body))
    return load_plans(path, known_meters=METERS)


@pytest.mark.parametrize("plan, message", [
    ("  - {plan_id: x, name: X, type: METERED, currency: USD, charges: [{meter: calls, unit: request, "
     "price: {type: per_unit, unit_price: '1'}}]}",
     "plans.yaml: plan 'x', charges.0.meter: 'calls' is not a declared meter"),
    ("  - {plan_id: x, name: X, type: METERED, currency: USD, charges: [{meter: requests, unit: request, "
     "price: {type: graduated, tiers: [{up_to: 10}, {up_to: 5}, {up_to: null}]}}]}",
     "plans.yaml: plan 'x', charges.0.price.tiers: tier bounds (up_to) must strictly increase"),
    ("  - {plan_id: x, name: X, type: FIXED, currency: USD}",
     "plans.yaml: plan 'x': base_fee: a FIXED plan needs a positive base fee"),
    ("  - {plan_id: x, name: X, type: METERED, currency: XXX, charges: []}",
     "plans.yaml: plan 'x', currency: currency 'XXX' has no ISO 4217 minor unit"),
    ("  - {plan_id: x, name: X, type: METERED, currency: USD, charges: [{meter: requests, unit: request, "
     "included: 5, price: {type: per_unit, unit_price: '1'}}]}",
     "plans.yaml: plan 'x': charges: only HYBRID plans include units in their base fee"),
    ("  - {plan_id: x, name: X, type: METERED, currency: USD, charges: [{meter: requests, unit: request, "
     "price: {type: per_unit, unit_price: '1'}, chain_multipliers: {eth-mainnet: '0'}}]}",
     "plans.yaml: plan 'x', charges.0.chain_multipliers: chain 'eth-mainnet': multiplier 0 must be positive"),
    ("  - {plan_id: x, name: X, type: FIXED, currency: USD, base_fee: '10', usage_caps: {requests: "
     "{soft: 10, hard: 5}}}",
     "plans.yaml: plan 'x', usage_caps.requests: soft cap 10 is above hard cap 5"),
])
def test_invalid_plans_are_named(tmp_path, plan, message):
    with pytest.raises(PlanFileError) as err:
        _load(tmp_path, "plans:\n" + plan + "\n")
    assert str(err.value).startswith(message)
