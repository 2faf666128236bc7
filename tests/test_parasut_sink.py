"""The Parasut sink against the local Parasut server (every request validated against the official
Swagger): e-Fatura or e-Arsiv, TRL amounts to the kurus, PDFs stored and hashed, one invoice per
contract-month through crashes, faults and re-runs, rotated tokens, bad input."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal

import httpx
import psycopg
import pytest

from billing_pipeline.domain.periods import Period
from billing_pipeline.sinks.parasut.client import ParasutClient, ParasutCredentials
from billing_pipeline.sinks.parasut.issuing import PollPolicy, issue_month
from billing_pipeline.stores.audit_bucket import AuditBucket
from billing_pipeline.stores.postgres import transaction
from at_once import at_once, failures
from parasut_fixture import CUSTOMERS, DRAFTS, reset, seed_turkish_drafts
from parasut_server import ParasutServer

OCTOBER = Period.parse_month("2026-10")
FAST = PollPolicy(job_polls=5, pdf_polls=5, interval=0.01)
B, P = "CTR-B:2026-10:v1", "CTR-P:2026-10:v1"


class SimulatedCrash(BaseException):
    pass


class CrashingTransport(httpx.HTTPTransport):
    """Dies just before the n-th request leaves, or just after its answer arrived."""

    def __init__(self, crash_at: int, when: str):
        super().__init__()
        self.crash_at, self.when, self.count = crash_at, when, 0

    def handle_request(self, request):
        self.count += 1
        if self.count == self.crash_at and self.when == "before":
            raise SimulatedCrash(f"before request {self.count}")
        response = super().handle_request(request)
        if self.count == self.crash_at and self.when == "after":
            response.read()
            raise SimulatedCrash(f"after request {self.count}")
        return response


def client(server, db_url, transport=None, per_window: int = 1000, window: float = 1.0) -> ParasutClient:
    c = ParasutClient(ParasutCredentials(server.url, "1234", "cid", "csecret", "api@example.test", "pw"), db_url,
                      requests_per_window=per_window, window_seconds=window, attempts=5, base_delay=0.01,
                      max_delay=0.05, timeout=1.0)
    if transport is not None:
        c.http = httpx.Client(timeout=1.0, transport=transport)
    return c


@pytest.fixture
def storage(s3_endpoint):
    bucket = AuditBucket("invoices-test", s3_endpoint)
    bucket.create()
    return bucket


@pytest.fixture
def drafts(db_url):
    with transaction(db_url) as conn:
        seed_turkish_drafts(conn)
    return db_url


def parasut(**kwargs) -> ParasutServer:
    server = ParasutServer(**{"rate_limit": None, "hang_seconds": 1.5, "job_seconds_until_done": 0.02, **kwargs})
    server.parasut.inboxes["1234567890"] = ["urn:mail:defaultpk@beta.test"]
    return server


def rows(url, sql, *params):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def check_one_invoice_each(url, server, storage) -> None:
    fake = server.parasut
    beta, pelin = fake.sales_invoices_for("1234567890"), fake.sales_invoices_for("10000000146")
    assert len(beta) == 1 and len(pelin) == 1, (beta, pelin)
    assert len(fake.contacts_with("1234567890")) == 1 and len(fake.contacts_with("10000000146")) == 1
    assert sorted(d["kind"] for d in fake.e_documents) == ["e_archives", "e_invoices"]
    assert fake.e_document_for(beta[0]["id"])["kind"] == "e_invoices"  # Beta has an inbox: e-Fatura
    assert fake.e_document_for(pelin[0]["id"])["kind"] == "e_archives"  # a person without one: e-Arsiv
    assert fake.rejected == []  # every request matched the Swagger
    issued = rows(url, """SELECT invoice_id, status, e_document_kind, external_subtotal::text, external_tax::text,
                                 external_total::text, subtotal::text, tax::text, total::text, pdf_sha256, pdf_location
                          FROM invoices ORDER BY 1""")
    for invoice_id, status, kind, ext_net, ext_vat, ext_total, net, vat, total, pdf_sha, location in issued:
        assert status == "ISSUED" and (ext_net, ext_vat, ext_total) == (net, vat, total)  # to the kurus
        key = location.split("/", 3)[3].split("?")[0]
        stored = storage._s3.get_object(Bucket=storage.bucket, Key=key)["Body"].read()
        assert stored.startswith(b"%PDF") and hashlib.sha256(stored).hexdigest() == pdf_sha
    assert [(r[0], r[2]) for r in issued] == [(B, "E_FATURA"), (P, "E_ARSIV")]
    assert rows(url, "SELECT entity_id, count(DISTINCT tx_id) FROM ledger WHERE event = 'INVOICE_ISSUED' "
                     "GROUP BY 1 ORDER BY 1") == [(B, 1), (P, 1)]


def test_issues_e_fatura_and_e_arsiv_in_lira_to_the_kurus(drafts, storage):
    with transaction(drafts) as conn:  # Beta's contract: the commercial scenario (TICARIFATURA), not basic
        conn.execute("UPDATE contracts SET e_document_scenario = 'commercial' WHERE contract_id = 'CTR-B'")
    with parasut() as server:
        result = issue_month(drafts, client(server, drafts), OCTOBER, storage=storage, polls=FAST)
        assert sorted((o.invoice_id, o.status, o.kind) for o in result.outcomes) == [
            (B, "ISSUED", "E_FATURA"), (P, "ISSUED", "E_ARSIV")]
        check_one_invoice_each(drafts, server, storage)
        assert [j["form"].get("scenario") for j in server.parasut.state.jobs.values()
                if j["kind"] == "e_invoices"] == ["commercial"]
        beta = server.parasut.sales_invoices_for("1234567890")[0]
        pelin = server.parasut.sales_invoices_for("10000000146")[0]
        numbers = {d["sales_invoice_id"]: f"PRS{int(d['document_id']):013d}" if d["kind"] == "e_archives" else None
                   for d in server.parasut.e_documents}
    # an e-Arsiv keeps its legal number, the e-document's (never recorded before); the Swagger gives
    # an e-Fatura's document no number field
    assert sorted(rows(drafts, "SELECT external_id, external_number FROM invoices")) == sorted(numbers.items())

    # the fixed contract: one static line, usage in an appendix (JSON + PDF in S3) named in the note
    assert [(d["description"], d["quantity"], d["unit_price"], d["vat_rate"]) for d in beta["details"]] == [
        ("Monthly RPC Service - 25,000 TL", Decimal(1), Decimal("25000.00"), Decimal(20))]
    assert (beta["attributes"]["currency"], beta["attributes"]["net_total"], beta["attributes"]["total_vat"]) == (
        "TRL", Decimal("30000.00"), Decimal("5000.00"))
    note = beta["attributes"]["description"]
    assert f"Ref: {B}" in note and f"Sozlesme SHA-256: {'ab' * 32}" in note and "Kullanim eki: s3://invoices-test/" in note
    appendix_key = f"invoices/2026-10/{B.replace(':', '_')}-usage.json"
    appendix = json.loads(storage._s3.get_object(Bucket=storage.bucket, Key=appendix_key)["Body"].read())
    assert [line["description"] for line in appendix["lines"]] == ["Enterprise TR - monthly fee",
                                                                  "ETH Mainnet - 2 requests"]
    # the converted metered contract: each lira line at quantity 1, KDV 20% per line
    assert [(d["description"], d["unit_price"], d["vat_rate"]) for d in pelin["details"]] == [
        ("BSC Mainnet - 3 requests", Decimal("1.73"), Decimal(20)), ("ETH Mainnet - 7 requests", Decimal("3.80"),
                                                                    Decimal(20))]
    assert (pelin["attributes"]["net_total"], pelin["attributes"]["total_vat"]) == (Decimal("6.64"), Decimal("1.11"))
    assert pelin["attributes"]["issue_date"] == "2026-11-01" and pelin["attributes"]["due_date"] == "2026-11-16"


def test_a_rerun_sends_nothing_and_tokens_rotate_and_persist(drafts, storage):
    with parasut() as server:
        issue_month(drafts, client(server, drafts), OCTOBER, storage=storage, polls=FAST)
        first_refresh = rows(drafts, "SELECT refresh_token FROM parasut_tokens")[0][0]
        writes = server.parasut.writes()
        issue_month(drafts, client(server, drafts), OCTOBER, storage=storage, polls=FAST)
        assert server.parasut.writes() == writes and server.parasut.token_grants == ["password"]
        client(server, drafts).request("GET", "/contacts")  # a new process: the stored refresh token
        assert server.parasut.token_grants == ["password", "refresh_token"]
        second_refresh = rows(drafts, "SELECT refresh_token FROM parasut_tokens")[0][0]
        assert second_refresh != first_refresh
        spent = httpx.post(f"{server.url}/oauth/token", data={"grant_type": "refresh_token", "client_id": "cid",
                                                              "client_secret": "csecret", "refresh_token": first_refresh})
        assert spent.status_code == 401
    # no token anywhere we write
    dumped = json.dumps(rows(drafts, "SELECT payload, response, last_error FROM sink_outbox"), default=str)
    dumped += json.dumps(rows(drafts, "SELECT sink_error FROM invoices"), default=str)
    assert first_refresh not in dumped and second_refresh not in dumped


def test_faults_a_stuck_job_and_a_rerun_leave_one_invoice_per_contract_month(drafts, storage):
    with parasut() as server:
        fake = server.parasut
        fake.inject("/v4/1234/sales_invoices", "500", "429", "timeout_after", method="POST")
        fake.inject("/v4/1234/e_archives", "503", "timeout_after", method="POST")
        fake.inject("/v4/1234/contacts", "reset", method="POST")
        fake.stuck_jobs = True
        first = issue_month(drafts, client(server, drafts), OCTOBER, storage=storage, polls=FAST)
        assert {o.invoice_id: o.status for o in first.outcomes} == {B: "FAILED", P: "FAILED"}
        assert all(o.reason.endswith("a re-run resumes it") for o in first.outcomes), first.outcomes
        assert rows(drafts, "SELECT DISTINCT status FROM invoices") == [("ISSUING",)]
        fake.stuck_jobs = False
        second = issue_month(drafts, client(server, drafts), OCTOBER, storage=storage, polls=FAST)
        assert sorted(o.status for o in second.outcomes) == ["ISSUED", "ISSUED"]
        check_one_invoice_each(drafts, server, storage)


def _clean_run_requests(url, storage) -> int:
    with parasut() as server:
        issue_month(url, client(server, url), OCTOBER, storage=storage, polls=FAST, workers=1)
        return len(server.parasut.requests)


def test_a_crash_before_or_after_any_request_then_a_rerun_issues_exactly_once(drafts, storage):
    calls = _clean_run_requests(drafts, storage)
    for crash_at in range(1, calls + 1):
        for when in ("before", "after"):
            with transaction(drafts) as conn:
                reset(conn)
                seed_turkish_drafts(conn)
                ledger_mark = conn.execute("SELECT coalesce(max(entry_id), 0) FROM ledger").fetchone()[0]
            with parasut() as server:
                with pytest.raises(SimulatedCrash):
                    issue_month(drafts, client(server, drafts, CrashingTransport(crash_at, when)), OCTOBER,
                                storage=storage, polls=FAST, workers=1)
                result = issue_month(drafts, client(server, drafts), OCTOBER, storage=storage, polls=FAST, workers=1)
                assert all(o.status == "ISSUED" for o in result.outcomes), (crash_at, when, result.outcomes)
                fake = server.parasut
                assert [len(fake.sales_invoices_for(t)) for t in ("1234567890", "10000000146")] == [1, 1], (crash_at, when)
                assert len(fake.e_documents) == 2 and fake.rejected == []
                assert rows(drafts, "SELECT count(*) FROM invoices WHERE status = 'ISSUED' AND pdf_sha256 IS NOT NULL") \
                    == [(2,)]
                assert rows(drafts, "SELECT count(DISTINCT tx_id) FROM ledger WHERE entry_id > %s", ledger_mark) == [(2,)]
                # what the re-run found done is SENT: nothing left to show as stuck in outbox_not_stuck
                assert rows(drafts, "SELECT idempotency_key, status FROM sink_outbox WHERE status <> 'SENT'") == [], (
                    crash_at, when)


def test_bad_input_stops_that_invoice_with_a_reason_the_others_proceed(db_url, storage):
    customers = {**CUSTOMERS, "org_n": ("No Tax Ltd", None, None), "org_v": ("Vat Ltd", "5555555553", None)}
    drafts = {**DRAFTS,
              "CTR-N:2026-10:v1": ("CTR-N", "org_n", "METERED", None, [("ETH Mainnet - 1 requests", "1.00", "0.20")]),
              "CTR-V:2026-10:v1": ("CTR-V", "org_v", "METERED", None, [("ETH Mainnet - 9 requests", "9.00", "1.80")])}
    with transaction(db_url) as conn:
        seed_turkish_drafts(conn, drafts, customers)
        conn.execute("UPDATE contracts SET vat_rate = 0.19 WHERE contract_id = 'CTR-V'")
        conn.execute("UPDATE invoices SET tax_rate = 0.19 WHERE contract_id = 'CTR-V'")
    with parasut() as server:
        server.parasut.inject("/v4/1234/e_archives", "422", method="POST")  # Parasut refuses Pelin's e-Arsiv
        result = issue_month(db_url, client(server, db_url), OCTOBER, storage=storage, polls=FAST, workers=1)
    reasons = {o.invoice_id: o.reason for o in result.outcomes if o.status == "FAILED"}
    assert sorted(o.invoice_id for o in result.outcomes if o.status == "ISSUED") == [B]
    assert reasons["CTR-N:2026-10:v1"] == ("invoice CTR-N:2026-10:v1: customer org_n has no tax number (VKN or "
                                           "TCKN); a Turkish e-invoice needs one")
    assert reasons["CTR-V:2026-10:v1"].startswith("invoice CTR-V:2026-10:v1: KDV rate 19% is not a Turkish rate")
    assert reasons[P].startswith("Parasut refused POST /e_archives: HTTP 422")
    stored = dict(rows(db_url, "SELECT invoice_id, sink_error FROM invoices WHERE sink_error IS NOT NULL"))
    assert stored == reasons


def test_dry_run_records_the_exact_requests_and_sends_nothing(drafts):
    result = issue_month(drafts, None, OCTOBER)
    assert sorted((o.invoice_id, o.status, o.requests) for o in result.outcomes) == [(B, "DRY_RUN", 2),
                                                                                     (P, "DRY_RUN", 2)]
    payload = rows(drafts, "SELECT payload FROM sink_outbox WHERE idempotency_key = %s",
                   f"parasut:{P}:sales_invoice")[0][0]
    assert payload["path"] == "/sales_invoices"
    details = payload["params"]["data"]["relationships"]["details"]["data"]
    assert [(d["attributes"]["unit_price"], d["attributes"]["vat_rate"]) for d in details] == [(1.73, 20), (3.8, 20)]
    assert rows(drafts, "SELECT DISTINCT status FROM invoices") == [("DRAFT",)]


def test_the_rate_limit_is_respected(drafts, storage):
    with parasut(rate_limit=10, rate_window=1.0) as server:
        issue_month(drafts, client(server, drafts, per_window=10, window=1.0), OCTOBER, storage=storage, polls=FAST)
        assert server.parasut.rate_limited == 0
        check_one_invoice_each(drafts, server, storage)


def test_two_sink_runs_of_the_same_month_at_once_issue_each_invoice_once(drafts, storage):
    """Two runs started together (each its own client, as two processes would be): one invoice and
    one e-document per contract-month, each recorded once in the ledger. Before the runs of a month
    took turns, a contract-month got a second sales invoice (3 of 3 tries)."""
    with parasut() as server:
        results = at_once(*[lambda: issue_month(drafts, client(server, drafts), OCTOBER, storage=storage,
                                                polls=FAST)] * 2)
        assert failures(results) == []
        check_one_invoice_each(drafts, server, storage)
