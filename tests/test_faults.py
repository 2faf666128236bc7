"""Fault test: 30% of the calls to Stripe, Parasut, TCMB/ECB and S3 fail (429, 5xx, timeouts,
resets, answers lost after the call was performed). The month still closes and issues, re-run as
the data team would when a run gives up, with no duplicate and nothing missing."""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import ExitStack
from decimal import Decimal

import dagster as dg
import psycopg
import pytest

from billing_pipeline.close import RunFailedError, close_month, issue_month
from billing_pipeline.domain.audit import PUBLIC_KEY, verify_snapshot
from billing_pipeline.domain.periods import Period
from billing_pipeline.errors import StoreUnavailableError
from billing_pipeline.resources import StripeResource
from billing_pipeline.resources.audit_storage import AuditStorageResource
from billing_pipeline.resources.fx import FxSourcesResource
from billing_pipeline.resources.parasut import ParasutResource
from billing_pipeline.steps.fx import resolve
from billing_pipeline.stores.audit_bucket import AuditBucket
from billing_pipeline.stores.ledger import verify
from fault_month import month  # noqa: F401 - a fixture
from fault_month import BULLETIN, INBOXES, NOV_1, OCT_30, PARASUT_TOTALS, STRIPE_SUBTOTALS, TOTALS, publish_rates
from fault_proxy import KINDS, FaultProxy, parasut_error, plain_error, s3_error, stripe_error
from fx_server import FxServer
from parasut_server import ParasutServer
from product_defs import product_defs
from stripe_server import StripeServer

OCTOBER = Period.parse_month("2026-10")
SEED = int(os.environ.get("FAULT_TEST_SEED", "20261101"))  # another seed: other faults on other calls
TIMEOUT = 1.0  # every client's per-request timeout; the proxy holds a "timeout" until the client gives up
MAX_RUNS = 6  # runs of each kind the data team would try before calling someone


def until_done(what: str, run, incomplete) -> list[str]:
    """Run as the data team would: again after a failed run or a red result, at most MAX_RUNS times.
    Returns each run's outcome; ``incomplete()`` names what is still missing, or None."""
    outcomes = []
    for _ in range(MAX_RUNS):
        try:
            run()
        except RunFailedError as exc:
            outcomes.append(f"failed: {exc}")
            continue
        missing = incomplete()
        outcomes.append(f"incomplete: {missing}" if missing else "done")
        if not missing:
            return outcomes
    pytest.fail(f"{what} still not done after {MAX_RUNS} runs: {outcomes}")


def passed(instance, asset: str, check: str) -> bool:
    """The latest result of an asset check, as the UI shows it."""
    return instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey(asset), check), limit=1)[0].evaluation.passed


def rate_not_trusted(instance, db_url: str) -> str | None:
    """What the data team reads on fx_snapshot: a red or yellow check names what to re-run for."""
    failing = [name for name in ("fx_rates_present", "fx_not_estimated", "fx_agrees_with_ecb")
               if not passed(instance, "fx_snapshot", name)]
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT status, source, failure FROM fx_snapshots WHERE currency = 'USD'").fetchone()
    return f"{', '.join(failing)} failing; USD rate {row}" if failing else None


def not_issued(db_url: str) -> str | None:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("""SELECT invoice_id, status, sink_error FROM invoices WHERE period_start = '2026-10-01'
                               AND (status <> 'ISSUED' OR sink_error IS NOT NULL
                                    OR (sink = 'PARASUT' AND pdf_sha256 IS NULL)) ORDER BY 1""").fetchall()
    return "; ".join(f"{i} {s}: {e}" for i, s, e in rows) or None


def test_thirty_percent_of_outside_calls_fail_and_every_invoice_is_issued_once(month, chdb_path, instance, s3_endpoint,
                                                                               signing_key, capsys):
    db_url = month
    AuditBucket("billing-audit", s3_endpoint).create()
    with ExitStack() as stack:
        stripe_server = stack.enter_context(StripeServer())
        parasut_server = stack.enter_context(ParasutServer(rate_limit=None, job_seconds_until_done=0.02))
        fx = stack.enter_context(FxServer())
        proxies = {name: stack.enter_context(FaultProxy(name, url, seed=SEED + n, error_body=body))
                   for n, (name, url, body) in enumerate([
                       ("stripe", stripe_server.url, stripe_error), ("parasut", parasut_server.url, parasut_error),
                       ("tcmb", fx.url, plain_error), ("s3", s3_endpoint, s3_error)])}
        stripe, parasut = stripe_server.stripe, parasut_server.parasut
        parasut.base_url = proxies["parasut"].url  # the PDF links it hands out go through the proxy too
        parasut.inboxes.update({vkn: [f"urn:mail:defaultpk@{vkn}.test"] for vkn in INBOXES})
        publish_rates(fx)
        fx_sources = FxSourcesResource(tcmb_base_url=f"{proxies['tcmb'].url}/kurlar",
                                       ecb_base_url=f"{proxies['tcmb'].url}/eurofxref", timeout_seconds=TIMEOUT)
        defs = product_defs(
            db_url, chdb_path, fx_sources=fx_sources,
            audit_storage=AuditStorageResource(endpoint_url=proxies["s3"].url, bucket="billing-audit",
                                               timeout_seconds=TIMEOUT),
            stripe=StripeResource(api_key="sk_test_local", api_base=proxies["stripe"].url, max_ops_per_second=500,
                                  timeout_seconds=TIMEOUT),
            parasut=ParasutResource(base_url=proxies["parasut"].url, company_id="1234", client_id="cid",
                                    client_secret="csecret", username="api@example.test", password="pw",
                                    requests_per_window=1000, window_seconds=1.0, poll_interval_seconds=0.01,
                                    timeout_seconds=TIMEOUT))

        started = time.monotonic()
        close_runs = until_done("close", lambda: close_month(instance, OCTOBER, definitions=defs),
                                lambda: rate_not_trusted(instance, db_url))
        closed = time.monotonic()
        issue_runs = until_done("issue", lambda: issue_month(instance, OCTOBER, definitions=defs),
                                lambda: not_issued(db_url))
        issued_at = time.monotonic()

        # TCMB sees a few calls per close; ask for the rate again (as `billing fx rate` does) until every
        # kind of fault has met it: the answer is the exact bulletin or an explicit failure, never another day
        lookups = []
        for _ in range(30):
            if set(proxies["tcmb"].counts) == set(KINDS):
                break
            sources = fx_sources.sources()
            try:
                outcome = resolve(sources, {"USD"}, NOV_1, Decimal("0.02")).outcomes[0]
            finally:
                sources.close()
            lookups.append("failed" if outcome.snapshot is None else "ok")
            assert outcome.snapshot is None or (outcome.snapshot.rate, outcome.snapshot.bulletin_date) == (
                Decimal("34.5678"), OCT_30)
            assert outcome.snapshot is not None or outcome.failure.startswith("TCMB did not answer")
        for proxy in proxies.values():
            proxy.enabled = False

        with capsys.disabled():
            print(f"\nclose runs ({closed - started:.1f} s): {close_runs}\nissue runs ({issued_at - closed:.1f} s): "
                  f"{issue_runs}\nrate lookups ({time.monotonic() - issued_at:.1f} s): {lookups}")
            for proxy in proxies.values():
                print(proxy.figures())
            if os.environ.get("FAULT_TEST_LOG"):
                for proxy in proxies.values():
                    print(proxy.name, proxy.log)
        assert {name: set(p.counts) for name, p in proxies.items()} == {name: set(KINDS) for name in proxies}
        # the dangerous kind met writes: the provider did it and the client never heard (TCMB is read only)
        assert {name: p.write_counts["lost"] > 0 for name, p in proxies.items()} == {
            "stripe": True, "parasut": True, "tcmb": False, "s3": True}

        # Stripe: one finalized invoice per contract-month at our subtotal, one item per line, one customer per org
        with psycopg.connect(db_url) as conn:
            lines = dict(conn.execute("SELECT invoice_id, count(*) FROM invoice_lines GROUP BY 1"))
        ours = {i["metadata"]["invoice_id"]: i for i in stripe.state.invoices.values()}
        assert len(stripe.state.invoices) == len(STRIPE_SUBTOTALS)
        assert {k: (i["currency"], i["subtotal"]) for k, i in ours.items()} == STRIPE_SUBTOTALS
        assert {i["status"] for i in ours.values()} == {"open"}
        assert {k: sum(1 for it in stripe.state.items.values() if it["invoice"] == i["id"]) for k, i in ours.items()} \
            == {k: lines[k] for k in STRIPE_SUBTOTALS}
        assert sorted(c["metadata"]["org_id"] for c in stripe.state.customers.values()) == [
            "org_a", "org_c", "org_d", "org_g1", "org_g2", "org_g3"]
        # Parasut: one contact, one sales invoice and one e-document per Turkish contract-month, to the kurus
        assert parasut.rejected == []
        for tax_number, (invoice_id, kind, gross, vat, net) in PARASUT_TOTALS.items():
            assert len(parasut.contacts_with(tax_number)) == 1
            [sales] = parasut.sales_invoices_for(tax_number)
            a = sales["attributes"]
            assert (f"Ref: {invoice_id}" in a["description"], a["gross_total"], a["total_vat"], a["net_total"]) == (
                True, gross, vat, net)
            assert [(d["kind"], d["document_id"] is not None) for d in parasut.e_documents
                    if d["sales_invoice_id"] == sales["id"]] == [(kind, True)]
        assert len(parasut.state.sales_invoices) == len(parasut.e_documents) == len(PARASUT_TOTALS)

    with psycopg.connect(db_url) as conn:
        invoices = conn.execute("SELECT invoice_id, total::text FROM invoices ORDER BY 1").fetchall()
        issued = conn.execute("""SELECT invoice_id, status, external_subtotal = subtotal, sink_error IS NULL
                                 FROM invoices ORDER BY 1""").fetchall()
        postings = conn.execute("""SELECT entity_id, count(DISTINCT tx_id) FROM ledger WHERE event = 'INVOICE_ISSUED'
                                   GROUP BY 1 ORDER BY 1""").fetchall()
        rate = conn.execute("""SELECT rate::text, source, bulletin_date, estimated, raw_sha256, ecb_rate::text
                               FROM fx_snapshots WHERE period_start = '2026-10-01'""").fetchall()
        p_invoice = conn.execute("SELECT fx_rate::text, fx_snapshot_ref FROM invoices "
                                 "WHERE invoice_id = 'CTR-P:2026-10:v1'").fetchone()
        recorded = [a for (a,) in conn.execute(
            """SELECT account FROM ledger WHERE tx_id = (SELECT tx_id FROM ledger WHERE event = 'AUDIT_SNAPSHOT'
                   AND entity_id LIKE '2026-10:%%' ORDER BY entry_id DESC LIMIT 1) AND account LIKE 'audit:%%@%%'""")]
        pdfs = conn.execute("SELECT invoice_id, pdf_location, pdf_sha256 FROM invoices WHERE sink = 'PARASUT' "
                            "ORDER BY 1").fetchall()
        chain = verify(conn)
        stuck = conn.execute("SELECT idempotency_key, status, last_error FROM sink_outbox "
                             "WHERE status NOT IN ('SENT') ORDER BY 1").fetchall()
    assert invoices == TOTALS
    assert issued == [(i, "ISSUED", True, True) for i, _ in TOTALS]
    assert postings == [(i, 1) for i, _ in TOTALS]  # each issue in the ledger once
    assert rate == [("34.5678000000", "TCMB", OCT_30, False, hashlib.sha256(fx.files[BULLETIN]).hexdigest(),
                     "34.6728110599")]
    assert p_invoice == ("34.5678000000", "TCMB:2026-10-30:USD")
    assert chain.ok, chain.first_error
    assert stuck == []  # every write settled: nothing for outbox_not_stuck to show in an hour
    checks = {(asset, name): passed(instance, asset, name) for asset, names in [
        ("stripe_invoices", ("all_invoices_issued", "stripe_totals_match", "outbox_not_stuck")),
        ("parasut_invoices", ("all_turkish_invoices_issued", "parasut_totals_match", "outbox_not_stuck")),
        ("audit_snapshot", ("snapshot_verifies",))] for name in names}
    assert [k for k, ok in checks.items() if not ok] == []

    # each e-document's PDF is in S3 (read directly, not through the proxy), the bytes we hashed
    s3 = AuditBucket("billing-audit", s3_endpoint)._s3
    assert [i for i, _, _ in pdfs] == [i for _, (i, *_) in sorted(PARASUT_TOTALS.items(), key=lambda x: x[1][0])]
    for invoice_id, location, digest in pdfs:
        key, _, version = location.removeprefix("s3://billing-audit/").partition("?versionId=")
        stored = s3.get_object(Bucket="billing-audit", Key=key, VersionId=version)["Body"].read()
        assert stored.startswith(b"%PDF") and hashlib.sha256(stored).hexdigest() == digest, invoice_id

    # the audit snapshot in S3 (read directly, not through the proxy): signed, whole, the versions the ledger holds
    objects, versions = AuditBucket("billing-audit", s3_endpoint).download("snapshots/2026-10")
    check = verify_snapshot(objects, signing_key.read_bytes())
    assert check.ok, check.problems
    assert objects[PUBLIC_KEY] == signing_key.read_bytes()
    assert sorted(recorded) == sorted(f"audit:{name}@{version}" for name, version in versions.items())


def test_s3_still_failing_after_its_retries_is_unavailable_not_refused(s3_endpoint):
    """A 5xx after the client's last retry is an outage to re-run after, not a refusal (a permission
    or a lock) to fix: the message says which."""
    AuditBucket("billing-audit", s3_endpoint).create()
    with FaultProxy("s3", s3_endpoint, rate=1.0, kinds=("5xx",), error_body=s3_error) as proxy:
        with pytest.raises(StoreUnavailableError) as failure:
            AuditBucket("billing-audit", proxy.url, timeout_seconds=TIMEOUT).put("invoices/2026-10/x.pdf", b"%PDF-1.4")
    assert str(failure.value).startswith(f"S3 at {proxy.url} unavailable during GetObjectLockConfiguration: HTTP 50")
    assert (str(failure.value)[-18:], proxy.calls, proxy.counts["5xx"]) == ("(after 6 attempts)", 6, 6)
