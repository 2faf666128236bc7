"""Invariant 7: secrets never reach logs, metadata, snapshots or exceptions.

A month is closed and issued with a distinctive value for every secret the product takes (see
secret_world), through the `billing` command (close; a first issue with a wrong Stripe key and a
wrong Parasut password, then the issue again; evidence, FX, ledger and audit verification; the
Stripe webhook endpoint; commands failing on an unreachable PostgreSQL, ClickHouse or S3) and in
process on the same persistent Dagster instance (the alert and Stripe event sensors, the dbt marts,
runs failing on a wrong ClickHouse password, an unreachable S3 and an unreachable PostgreSQL).
Then everything written anywhere is read back and searched (secret_scan): nothing is found. Last,
one leak is planted in each kind of place, and the same scan finds exactly those.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psycopg
import pyarrow as pa
import pytest
from fpdf import FPDF
from psycopg.types.json import Jsonb

from billing_pipeline.analytics.project import DBT_PROJECT_DIR
from billing_pipeline.close import RunFailedError, _QUIET, _raise_if_failed, build_marts
from billing_pipeline.definitions import build_definitions, build_resources
from billing_pipeline.domain.periods import Period
from billing_pipeline.instance import STORAGE_URL_ENV, get_instance
from billing_pipeline.resources import StripeResource
from billing_pipeline.sensors.check_alerts import check_alerts
from billing_pipeline.sensors.stripe_events import stripe_payment_events
from billing_pipeline.stores.audit_bucket import AuditBucket
from billing_pipeline.stores.postgres import database_name, with_database
from month_fixture import _row, october_events, ts
from secret_scan import RecordingHandler, SecretScanner, state_files_except_key
from secret_world import (BUCKET, deliver, free_port, local_world, public_key_pem, stripe_signature,
                          url_with_password, webhook_endpoint)

OCTOBER = Period.parse_month("2026-10")
UNREACHABLE_DB = "postgresql://postgres@127.0.0.1:1/billing"


@pytest.fixture
def world(october, usage_store, chdb_path, monkeypatch):
    """October (month_fixture) plus org_p, a Turkish person on a dollar plan (so FX is fetched)."""
    usage_store.insert_arrow("requests_raw", pa.Table.from_pylist(
        [_row(ts(2026, 10, 6, 10, 0, i), f"p{i}", "org_p", "prj_p", "eth-mainnet") for i in range(3)],
        schema=october_events().schema))
    with psycopg.connect(october, autocommit=True) as conn:
        conn.execute("INSERT INTO customers (org_id, legal_name, country, tax_id, email) "
                     "VALUES ('org_p', 'Pelin Yilmaz', 'TR', '10000000146', 'pelin@example.test')")
        conn.execute("INSERT INTO contracts (contract_id, org_id, plan_id, contract_type, currency, region, start_at) "
                     "VALUES ('CTR-P', 'org_p', 'pro_test', 'METERED', 'USD', 'TR', '2026-01-01')")
    state_dir = Path(os.environ["BILLING_STATE_DIR"])
    with local_world(october, chdb_path, state_dir) as w:
        for name, value in w.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("DAGSTER_HOME", str(state_dir / "dagster"))  # get_instance sets both; undone after
        monkeypatch.setenv(STORAGE_URL_ENV, "")
        yield w


@dataclass
class Traces:
    """What the product said outside its stores: command output, sensor results, exceptions, logs."""
    started: float = field(default_factory=time.time)
    outputs: dict = field(default_factory=dict)  # name -> object with stdout, stderr
    sensor_results: list = field(default_factory=list)
    failures: dict = field(default_factory=dict)  # name -> exception
    log: RecordingHandler = field(default_factory=RecordingHandler)
    process_output: str = ""
    stopped: list = field(default_factory=list)  # (invoice, status, reason) after the wrong credentials
    deliveries: list = field(default_factory=list)  # the webhook endpoint's answers
    marts: list = field(default_factory=list)  # run ids of the dbt marts


def _failed_run(defs: dg.Definitions, instance, asset: str, partition: str) -> RunFailedError:
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey(asset)], partition_key=partition, run_config=_QUIET,
        raise_on_error=False)
    with pytest.raises(RunFailedError) as failure:
        _raise_if_failed(result, asset)
    return failure.value


def _masked(text: str) -> str:
    """Run ids, ports and a masked key's last four characters vary from run to run."""
    text = re.sub(r"\(run [0-9a-f-]{36}\)", "(run ID)", re.sub(r"127\.0\.0\.1:\d{2,}", "127.0.0.1:PORT", text))
    return re.sub(r"(sk_test_\*+)\w{4}", r"\1LAST", re.sub(r"versionId=[\w.-]+", "versionId=V", text))


def _run_the_month(world, instance, monkeypatch, traces: Traces) -> None:
    s, out = world.secrets, traces.outputs
    with dg.build_sensor_context(instance=instance) as context:  # alerting starts now
        traces.sensor_results.append(check_alerts(context))
        alert_cursor = context.cursor
    # -- the `billing` command
    out["close"] = world.cli("close", "--month", "2026-10")
    out["issue, wrong credentials"] = world.cli("issue", "--month", "2026-10",
                                                BILLING_STRIPE_API_KEY=s["stripe_wrong_api_key"],
                                                BILLING_PARASUT_PASSWORD=s["parasut_wrong_password"])
    with psycopg.connect(world.db_url) as conn:
        traces.stopped = conn.execute("SELECT invoice_id, status, sink_error FROM invoices "
                                      "WHERE sink_error IS NOT NULL ORDER BY 1").fetchall()
    out["issue"] = world.cli("issue", "--month", "2026-10")
    out["invoices"] = world.cli("invoices", "--month", "2026-10")
    out["fx rate"] = world.cli("fx", "rate", "--currency", "USD", "--date", "2026-11-01")
    out["evidence"] = world.cli("evidence", "--contract", "CTR-A", "--from", "2026-10-01", "--to", "2026-10-08")
    out["ledger verify"] = world.cli("ledger", "verify")
    public_key = world.state_dir / "public_key.pem"
    public_key.write_text(public_key_pem(s["audit_signing_key_pem"]))
    snapshot = f"s3://{BUCKET}/snapshots/2026-10"
    out["audit verify"] = world.cli("audit", "verify", snapshot, "--public-key", str(public_key), "--ledger")
    out["migrate, PostgreSQL unreachable"] = world.cli(
        "migrate", BILLING_DATABASE_URL=url_with_password(UNREACHABLE_DB, s["postgres_password"]))
    out["close, ClickHouse unreachable"] = world.cli(
        "close", "--month", "2026-10",
        BILLING_CLICKHOUSE_URL=f"http://reader:{s['clickhouse_password'].replace('&', '%26')}@127.0.0.1:1/usage")
    out["audit verify, S3 unreachable"] = world.cli("audit", "verify", snapshot, "--public-key", str(public_key),
                                                    BILLING_AUDIT_S3_ENDPOINT="http://127.0.0.1:1")
    # -- the Stripe webhook endpoint: a delivery signed with the secret, and a forged one
    fake = world.stripe.stripe
    paid = fake.invoices_for("CTR-D:2026-10:v1")[0]["id"]
    fake.handle("POST", f"/v1/invoices/{paid}/pay", {"paid_out_of_band": "true"}, None, s["stripe_api_key"])
    event = json.dumps(fake.state.events[-1]).encode()
    with webhook_endpoint(world, port=free_port()) as endpoint:
        traces.deliveries = [deliver(endpoint.url, event, stripe_signature(event, s["stripe_webhook_secret"])),
                             deliver(endpoint.url, event, stripe_signature(event, "whsec_forged"))]
    out["stripe-webhook"] = endpoint

    # -- in process, on the same instance: the sensors, the dbt marts, runs failing on a bad setting
    def tick(sensor, cursor=None, **resources):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources or None) as context:
            traces.sensor_results.append(sensor(context))

    live = build_resources()
    tick(stripe_payment_events, stripe=live["stripe"], billing_db=live["billing_db"])
    monkeypatch.setenv("BILLING_STRIPE_API_KEY", s["stripe_wrong_api_key"])
    tick(stripe_payment_events, stripe=build_resources()["stripe"], billing_db=live["billing_db"])
    monkeypatch.setenv("BILLING_STRIPE_API_KEY", s["stripe_api_key"])
    world.alerts.fail = True
    tick(check_alerts, alert_cursor)  # the delivery is refused: retried on the next tick
    world.alerts.fail = False
    tick(check_alerts, alert_cursor)
    traces.marts = build_marts(instance, OCTOBER, definitions=build_definitions())

    bad = {"usage_rollups, wrong ClickHouse password": ("BILLING_CLICKHOUSE_PASSWORD", s["clickhouse_wrong_password"],
                                                         "usage_rollups", "2026-10-05"),
           "audit_snapshot, S3 unreachable": ("BILLING_AUDIT_S3_ENDPOINT", "http://127.0.0.1:1", "audit_snapshot",
                                              "2026-10-01"),
           "rated_charges, PostgreSQL unreachable": ("BILLING_DATABASE_URL", url_with_password(
               UNREACHABLE_DB, s["postgres_password"]), "rated_charges", "2026-10-01")}
    for name, (variable, value, asset, partition) in bad.items():
        monkeypatch.setenv(variable, value)
        traces.failures[name] = _failed_run(build_definitions(), instance, asset, partition)
        monkeypatch.setenv(variable, world.env[variable])


def _scan_everything(world, instance, traces: Traces) -> SecretScanner:
    scanner = SecretScanner(world.all_secrets())
    scanner.dagster_events(instance)
    # parasut_tokens is where the rotating refresh token must be kept (asserted below), like a key file
    scanner.database(world.db_url, skip={("parasut_tokens", "refresh_token")})
    scanner.database(with_database(world.db_url, f"{database_name(world.db_url)}_dagster"))
    scanner.bucket_objects(world.s3_endpoint, world.secrets["s3_access_key"], world.secrets["s3_secret_key"])
    scanner.files("state dir file", world.state_dir, skip_names=state_files_except_key(world.state_dir))
    for folder in ("logs", "target"):  # what dbt wrote in this test (other runs' files hold no secret of ours)
        scanner.files("dbt file", DBT_PROJECT_DIR / folder, newer_than=traces.started)
    for name, result in traces.outputs.items():
        scanner.text("command output", f"billing {name}", f"{result.stdout}\n{result.stderr}")
    for line in traces.log.lines:
        scanner.text("log record", "log", line)
    scanner.text("process output", "stdout/stderr", traces.process_output)
    for result in traces.sensor_results:
        scanner.text("sensor result", f"sensor {result!r}"[:80], repr(result))
    for name, failure in traces.failures.items():
        scanner.exception(name, failure)
    return scanner


def test_a_month_closed_and_issued_leaks_no_secret_anywhere(world, monkeypatch, capfd):
    traces, s, root = Traces(), world.secrets, logging.getLogger()
    root_level = root.level
    root.addHandler(traces.log)
    root.setLevel(logging.INFO)  # what a deployment logs
    logging.getLogger("billing_pipeline").setLevel(logging.DEBUG)  # our own code: every level
    try:
        instance = get_instance(world.db_url)
        _run_the_month(world, instance, monkeypatch, traces)
    finally:
        root.removeHandler(traces.log)
        root.setLevel(root_level)
        logging.getLogger("billing_pipeline").setLevel(logging.NOTSET)
    captured = capfd.readouterr()
    traces.process_output = captured.out + captured.err

    # the secrets were in use: every command worked with them, and each wrong one was refused
    assert {n: r.returncode for n, r in traces.outputs.items() if hasattr(r, "returncode")} == {
        "close": 0, "issue, wrong credentials": 0, "issue": 0, "invoices": 0, "fx rate": 0, "evidence": 0,
        "ledger verify": 0, "audit verify": 0, "migrate, PostgreSQL unreachable": 2,
        "close, ClickHouse unreachable": 2, "audit verify, S3 unreachable": 2}
    refused = "Stripe refused GET /v1/customers/search: HTTP 401 Invalid API Key provided: sk_test_" + 33 * "*" + "LAST"
    assert [(i, status, _masked(reason)) for i, status, reason in traces.stopped] == [
        ("CTR-A:2026-10:v1", "DRAFT", f"customer org_a: {refused}"),
        ("CTR-B:2026-10:v1", "DRAFT", "Parasut refused POST /oauth/token: HTTP 401: invalid_grant"),
        ("CTR-C:2026-10:v1", "DRAFT", f"customer org_c: {refused}"),
        ("CTR-D:2026-10:v1", "DRAFT", f"customer org_d: {refused}"),
        ("CTR-P:2026-10:v1", "DRAFT", "Parasut refused POST /oauth/token: HTTP 401: invalid_grant")]
    assert world.stripe_keys_presented == {s["stripe_api_key"], s["stripe_wrong_api_key"]}
    assert "(Stripe live, Parasut live)" in traces.outputs["issue"].stdout  # it said "a dry run" with credentials
    assert "snapshot OK: 2026-10, 15 files" in traces.outputs["audit verify"].stdout  # signed with our key
    failing = ("migrate, PostgreSQL unreachable", "close, ClickHouse unreachable", "audit verify, S3 unreachable")
    assert [_masked(traces.outputs[n].stderr.splitlines()[-1]) for n in failing] == [
        "billing: error: cannot connect to PostgreSQL at BILLING_DATABASE_URL="
        "'postgresql://postgres:***@127.0.0.1:1/billing': Connection refused",
        "billing: error: cannot reach ClickHouse at BILLING_CLICKHOUSE_URL='http://reader:***@127.0.0.1:1/usage': "
        "Connection refused",
        "billing: error: S3 at http://127.0.0.1:1 unreachable during ListObjectsV2: Could not connect to the endpoint "
        'URL: "http://127.0.0.1:1/billing-audit?list-type=2&prefix=snapshots%2F2026-10%2F&encoding-type=url"']
    assert len(traces.marts) == 2  # dbt ran with the database password it was given
    assert traces.deliveries == [(200, {"received": True, "outcome": "paid"}), (400, {
        "error": "signature check failed: No signatures found matching the expected signature for payload"})]
    assert [(valid, a["asset"], a["check"]) for valid, a in world.alerts.received] == [
        (True, "usage_rollups", "no_quarantined_rows"), (True, "rated_charges", "all_usage_rated"),
        (True, "parasut_invoices", "all_turkish_invoices_issued"), (True, "stripe_invoices", "all_invoices_issued")]
    assert [_masked(r.skip_message) for r in traces.sensor_results] == [
        "alerting starts from the next failing check",
        "2 already issued, 1 already paid; 1 already applied; cursor evt_0000000017",
        "Stripe events not read this tick: " + refused.replace("customers/search", "events"),
        "0 alerts sent; delivery failed, retried next tick: alert webhook answered HTTP 503",
        "4 failing checks sent to the alert webhook (31 results read)"]
    assert {n: _masked(str(e)) for n, e in traces.failures.items()} == {
        "usage_rollups, wrong ClickHouse password": "usage_rollups failed in step usage_rollups (run ID): cannot reach "
        "ClickHouse at BILLING_CLICKHOUSE_URL='http://127.0.0.1:PORT': Received ClickHouse exception, code: 516, "
        "server response: Code: 516. DB::Exception: billing_reader: Authentication failed: password is incorrect, or "
        "there is no user with such name. (AUTHENTICATION_FAILED) (version 26.1.1.1) (for url http://127.0.0.1:PORT)",
        "audit_snapshot, S3 unreachable": "audit_snapshot failed in step audit_snapshot (run ID): S3 at "
        'http://127.0.0.1:1 unreachable during GetObjectLockConfiguration: Could not connect to the endpoint URL: '
        '"http://127.0.0.1:1/billing-audit?object-lock"',
        "rated_charges, PostgreSQL unreachable": "rated_charges failed in step rated_charges (run ID): cannot connect "
        "to PostgreSQL at BILLING_DATABASE_URL='postgresql://postgres:***@127.0.0.1:1/billing': Connection refused"}
    with psycopg.connect(world.db_url) as conn:
        stored_refresh = conn.execute("SELECT refresh_token FROM parasut_tokens").fetchall()
    assert world.parasut.parasut.token_grants == ["password", "refresh_token"] and len(world.parasut_tokens) == 4
    assert len(stored_refresh) == 1 and stored_refresh[0][0] in world.parasut_tokens  # the one kept on purpose

    # -- nothing anywhere
    scanner = _scan_everything(world, instance, traces)
    print("scanned:", ", ".join(f"{k} {v:,}" for k, v in sorted(scanner.seen.items())))
    assert scanner.hits == []

    # -- the scan finds a leak: one planted in each kind of place, found there and nowhere else
    _plant_leaks(world, instance, traces)
    found = _scan_everything(world, instance, traces).hits
    instance.dispose()
    assert sorted({(h.secret, h.encoding, _masked(h.where.replace(str(world.state_dir), "STATE"))) for h in found}) == [
        ("alert_webhook_secret", "raw", "planted"),
        ("audit_signing_key_pem", "raw", "STATE/planted.pem"),
        ("parasut_password", "base64@2", "public.sink_outbox.payload"),  # inside base64("user:password")
        ("parasut_token_0", "raw", "log"),
        ("parasut_username", "base64@0", "public.sink_outbox.payload"),
        ("postgres_password", "url-encoded", f"s3://{BUCKET}/planted/connection.pdf?versionId=V (zlib 0)"),
        ("stripe_api_key", "raw", "public.snapshots.snapshot_body")]  # Dagster's zlib-compressed job snapshot


def _plant_leaks(world, instance, traces: Traces) -> None:
    s = world.all_secrets()
    token = sorted(world.parasut_tokens)[0]

    @dg.asset(name="planted_probe")
    def probe(stripe: StripeResource) -> None:
        """A resource given its key as a string instead of EnvVar: the run's job snapshot holds it."""

    dg.Definitions(assets=[probe], resources={"stripe": StripeResource(api_key=s["stripe_api_key"], dry_run=True)}
                   ).resolve_implicit_global_asset_job_def().execute_in_process(instance=instance, run_config=_QUIET)
    basic = base64.b64encode(f"{s['parasut_username']}:{s['parasut_password']}".encode()).decode()
    with psycopg.connect(world.db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO sink_outbox (sink, idempotency_key, payload, status) "
                     "VALUES ('PARASUT', 'planted', %s, 'DRY_RUN')",
                     (Jsonb({"headers": {"Authorization": f"Basic {basic}"}}),))
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=8)
    pdf.cell(text=world.db_url)  # the URL-encoded password, inside a compressed page stream
    AuditBucket(BUCKET, world.s3_endpoint, access_key=s["s3_access_key"], secret_key=s["s3_secret_key"]).put(
        "planted/connection.pdf", bytes(pdf.output()))
    logging.getLogger().addHandler(traces.log)
    logging.getLogger("billing_pipeline.planted").warning("Parasut answered %s", token)
    logging.getLogger().removeHandler(traces.log)
    (world.state_dir / "planted.pem").write_text(s["audit_signing_key_pem"])
    try:
        try:
            raise ValueError(f"alert not signed with {s['alert_webhook_secret']}")
        except ValueError as cause:
            raise RuntimeError("alert delivery failed") from cause
    except RuntimeError as exc:
        traces.failures["planted"] = exc
