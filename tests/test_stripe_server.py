"""The local Stripe server holds to Stripe's protocol where the sink's correctness depends on it,
checked through the official SDK."""

from __future__ import annotations

import pytest
import stripe

from stripe_server import StripeServer


@pytest.fixture
def sdk():
    with StripeServer() as server:
        client = stripe.StripeClient("sk_test_local", base_addresses={"api": server.url}, max_network_retries=0)
        yield client, server


def test_idempotency_keys_replay_or_refuse(sdk):
    client, server = sdk
    first = client.v1.customers.create(params={"name": "Alpha"}, options={"idempotency_key": "k1"})
    again = client.v1.customers.create(params={"name": "Alpha"}, options={"idempotency_key": "k1"})
    assert again.id == first.id and len(server.stripe.state.customers) == 1
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError, match="same parameters"):
        client.v1.customers.create(params={"name": "Beta"}, options={"idempotency_key": "k1"})


def test_unknown_and_malformed_parameters_are_rejected(sdk):
    client, server = sdk
    cus = client.v1.customers.create(params={"name": "Alpha"})
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.raw_request("post", "/v1/invoices", customer=cus.id, colour="blue")
    assert (unknown.value.code, unknown.value.param) == ("parameter_unknown", "colour")
    with pytest.raises(stripe.InvalidRequestError) as malformed:
        client.raw_request("post", "/v1/invoiceitems", customer=cus.id, amount="12.5", currency="usd")
    assert malformed.value.code == "parameter_invalid_integer"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.raw_request("post", "/v1/invoiceitems", customer=cus.id, currency="usd")
    assert missing.value.code == "parameter_missing"
    # a validation error is not saved under its key: the corrected request with the same key goes through
    with pytest.raises(stripe.InvalidRequestError):
        client.raw_request("post", "/v1/invoices", customer=cus.id, currency="USD", idempotency_key="k2")
    client.raw_request("post", "/v1/invoices", customer=cus.id, currency="usd", idempotency_key="k2")


def test_drafts_take_items_finalized_invoices_do_not(sdk):
    client, server = sdk
    cus = client.v1.customers.create(params={"name": "Alpha"})
    inv = client.v1.invoices.create(params={"customer": cus.id, "currency": "usd", "auto_advance": False,
                                            "collection_method": "send_invoice", "days_until_due": 30})
    client.v1.invoice_items.create(params={"customer": cus.id, "invoice": inv.id, "amount": 1234, "currency": "usd"})
    assert client.v1.invoices.retrieve(inv.id).subtotal == 1234
    done = client.v1.invoices.finalize_invoice(inv.id)
    assert (done.status, done.number, done.amount_due) == ("open", "RPC-0001", 1234)
    with pytest.raises(stripe.InvalidRequestError, match="only add invoice items to draft invoices"):
        client.v1.invoice_items.create(params={"customer": cus.id, "invoice": inv.id, "amount": 1, "currency": "usd"})
    with pytest.raises(stripe.InvalidRequestError, match="re-finalize"):
        client.v1.invoices.finalize_invoice(inv.id)
    events = client.v1.events.list(params={"types": ["invoice.finalized"]})
    assert [e.type for e in events.data] == ["invoice.finalized"]


def test_faults_and_rate_limit_answer_like_stripe(sdk):
    client, server = sdk
    server.stripe.inject("/v1/customers", "429", "500")
    with pytest.raises(stripe.RateLimitError):
        client.v1.customers.create(params={"name": "A"})
    with pytest.raises(stripe.APIError) as error:
        client.v1.customers.create(params={"name": "A"})
    assert error.value.http_status == 500 and error.value.headers["Stripe-Should-Retry"] == "true"
    server.stripe.rate_limit, server.stripe._tokens = 2, 2
    answers = []
    for _ in range(4):
        try:
            client.v1.customers.create(params={"name": "B"})
            answers.append(200)
        except stripe.RateLimitError:
            answers.append(429)
    assert answers == [200, 200, 429, 429]
