"""Invariant 7 for failures: what a bad credential or an unreachable store raises names the setting
and the reason, never a secret. Each failure is induced against a local server (or a closed port),
its exception read back (str, repr, traceback and every chained cause or context) and searched
for every secret in every encoding (secret_scan); the messages themselves are asserted exactly."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from billing_pipeline.sinks.parasut.client import ParasutClient, ParasutCredentials
from billing_pipeline.sinks.stripe.gateway import RetryPolicy, StripeGateway
from billing_pipeline.sinks.stripe.webhook import verified_event
from billing_pipeline.steps.alerts import post_alert
from billing_pipeline.steps.audit import load_signing_key
from billing_pipeline.stores.audit_bucket import AuditBucket
from billing_pipeline.stores.clickhouse import _chdb_sessions, open_usage_store
from billing_pipeline.stores.openmeter import OpenMeterClient
from billing_pipeline.stores.postgres import connect
from clickhouse_http import ClickHouseHttpServer
from parasut_server import ParasutServer
from secret_scan import SecretScanner
from secret_world import (CLICKHOUSE_USER, guard_clickhouse, guard_stripe, make_secrets, stripe_signature,
                          url_with_password)
from stripe_server import StripeServer

CLOSED = "127.0.0.1:1"  # nothing listens there: connection refused at once


def _raised(call) -> BaseException:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - any failure is what is under test
        return exc
    raise AssertionError("no failure was raised")


def _ports(text: str) -> str:
    return re.sub(r"127\.0\.0\.1:\d{2,}", "127.0.0.1:PORT", text)


@pytest.fixture
def secrets():
    s = make_secrets()
    s["parasut_pdf_link_token"] = f"pdfLink{uuid.uuid4().hex}"  # a signed link's credential part
    s["wrong_type_signing_key_pem"] = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return s


def test_failures_name_the_setting_and_never_a_secret(secrets, db_url, usage_store, chdb_path, monkeypatch):
    s, failures = secrets, {}
    failures["postgres unreachable"] = _raised(lambda: connect(
        url_with_password(f"postgresql://postgres@{CLOSED}/billing", s["postgres_password"])))
    failures["postgres password in the query"] = _raised(lambda: connect(
        f"postgresql://postgres@{CLOSED}/billing?password={quote(s['postgres_password'], safe='')}"))
    failures["postgres password with a bare @ and /"] = _raised(lambda: connect(
        f"postgresql://postgres:x@{s['postgres_password']}@{CLOSED}/billing"))

    failures["clickhouse unreachable"] = _raised(lambda: open_usage_store(
        f"http://{CLICKHOUSE_USER}:{quote(s['clickhouse_password'], safe='')}@{CLOSED}"))
    with ClickHouseHttpServer(_chdb_sessions[str(Path(chdb_path).resolve())]) as clickhouse:
        guard_clickhouse(clickhouse, CLICKHOUSE_USER, s["clickhouse_password"])
        failures["clickhouse wrong password"] = _raised(lambda: open_usage_store(
            clickhouse.url, CLICKHOUSE_USER, s["clickhouse_wrong_password"]))

    failures["s3 unreachable"] = _raised(lambda: AuditBucket(
        "billing-audit", f"http://{CLOSED}", access_key=s["s3_access_key"],
        secret_key=s["s3_secret_key"]).upload("snapshots/2026-10", {"manifest.json": b"{}"}))

    with StripeServer() as stripe:
        guard_stripe(stripe, s["stripe_api_key"])
        failures["stripe wrong key"] = _raised(lambda: StripeGateway(s["stripe_wrong_api_key"], stripe.url).request(
            "get", "/v1/customers/cus_0000000001"))
    failures["stripe unreachable"] = _raised(lambda: StripeGateway(
        s["stripe_api_key"], f"http://{CLOSED}", retry=RetryPolicy(attempts=2), sleep=lambda _: None).request(
        "post", "/v1/customers", {"name": "Alpha Ltd"}, idempotency_key="billing:CTR-A:2026-10:v1:customer"))
    payload = b'{"id": "evt_1", "type": "invoice.paid"}'
    failures["stripe webhook forged"] = _raised(lambda: verified_event(
        payload, stripe_signature(payload, "whsec_forged"), s["stripe_webhook_secret"]))

    with ParasutServer(rate_limit=None, client_secret=s["parasut_client_secret"], username=s["parasut_username"],
                       password=s["parasut_password"]) as parasut:
        def client(password: str) -> ParasutClient:
            return ParasutClient(ParasutCredentials(parasut.url, "1234", "cid", s["parasut_client_secret"],
                                                    s["parasut_username"], password), db_url, attempts=2,
                                 sleep=lambda _: None)
        failures["parasut wrong password"] = _raised(lambda: client(s["parasut_wrong_password"]).request(
            "GET", "/contacts"))
        parasut.parasut.inject("/files/", "503", "503")
        failures["parasut pdf link failing"] = _raised(lambda: client(s["parasut_password"]).download(
            f"{parasut.url}/files/{s['parasut_pdf_link_token']}.pdf"))

    failures["openmeter unreachable"] = _raised(lambda: OpenMeterClient(
        f"http://meter:{s['openmeter_token']}@{CLOSED}", s["openmeter_token"], max_attempts=1).query(
        "requests", datetime(2026, 10, 1, tzinfo=timezone.utc), datetime(2026, 10, 2, tzinfo=timezone.utc), []))
    failures["alert webhook unreachable"] = _raised(lambda: post_alert(
        f"http://{CLOSED}/hooks/{s['alert_webhook_url_token']}", s["alert_webhook_secret"],
        {"check": "all_usage_rated"}, attempts=1))

    monkeypatch.setenv("BILLING_AUDIT_SIGNING_KEY", s["wrong_type_signing_key_pem"])
    failures["signing key of another type"] = _raised(load_signing_key)
    monkeypatch.setenv("BILLING_AUDIT_SIGNING_KEY", s["audit_signing_key_pem"].replace("END PRIVATE", "END PRIVATE X"))
    failures["signing key with a broken footer"] = _raised(load_signing_key)

    scanner = SecretScanner(s)
    for name, failure in failures.items():
        scanner.exception(name, failure)
    assert scanner.hits == []
    assert (scanner.seen["exception items"], len(failures)) == (38, 15)  # causes and contexts included

    stripe_refused = "HTTP 401 Invalid API Key provided: sk_test_" + 33 * "*"
    messages = {name: re.sub(r"(sk_test_\*+)\w{4}", r"\1", _ports(str(e))) for name, e in failures.items()}
    unreachable = messages["stripe unreachable"]  # the SDK's own text follows: how to reach Stripe's support
    messages["stripe unreachable"] = unreachable[:unreachable.index("communicating with Stripe.") + 26]
    assert messages == {
        "postgres unreachable": "cannot connect to PostgreSQL at BILLING_DATABASE_URL="
                                "'postgresql://postgres:***@127.0.0.1:1/billing': Connection refused",
        "postgres password in the query": "cannot connect to PostgreSQL at BILLING_DATABASE_URL="
                                          "'postgresql://postgres@127.0.0.1:1/billing?password=***': "
                                          "Connection refused",
        "postgres password with a bare @ and /": "BILLING_DATABASE_URL is not a well-formed URL: percent-encode any '@', "
                                           "'/', '?' or '#' in its user name or password (%40, %2F, %3F, %23); the "
                                           "URL is not shown, as part of it may be the password",
        "clickhouse unreachable": "cannot reach ClickHouse at BILLING_CLICKHOUSE_URL="
                                  "'http://billing_reader:***@127.0.0.1:1': Connection refused",
        "clickhouse wrong password": "cannot reach ClickHouse at BILLING_CLICKHOUSE_URL='http://127.0.0.1:PORT': "
                                     "Received ClickHouse exception, code: 516, server response: Code: 516. "
                                     "DB::Exception: billing_reader: Authentication failed: password is incorrect, or "
                                     "there is no user with such name. (AUTHENTICATION_FAILED) (version 26.1.1.1) "
                                     "(for url http://127.0.0.1:PORT)",
        "s3 unreachable": "S3 at http://127.0.0.1:1 unreachable during GetObjectLockConfiguration: Could not connect "
                          'to the endpoint URL: "http://127.0.0.1:1/billing-audit?object-lock"',
        "stripe wrong key": f"Stripe refused GET /v1/customers/cus_0000000001: {stripe_refused}",
        "stripe unreachable": "Stripe POST /v1/customers still failing after 2 attempts: APIConnectionError HTTP None "
                              "Unexpected error communicating with Stripe.",
        "stripe webhook forged": "signature check failed: No signatures found matching the expected signature for "
                                 "payload",
        "parasut wrong password": "Parasut refused POST /oauth/token: HTTP 401: invalid_grant",
        "parasut pdf link failing": "Parasut GET file link on 127.0.0.1:PORT still failing after 2 attempts: HTTP 503",
        "openmeter unreachable": "cannot reach OpenMeter at BILLING_OPENMETER_URL='http://meter:***@127.0.0.1:1': "
                                 "ConnectError: [Errno 111] Connection refused",
        "alert webhook unreachable": "[Errno 111] Connection refused",
        "signing key of another type": "the audit signing key must be an Ed25519 key",
        "signing key with a broken footer": "the audit signing key (BILLING_AUDIT_SIGNING_KEY / "
                                            "BILLING_AUDIT_SIGNING_KEY_FILE) is not a PEM private key"}
