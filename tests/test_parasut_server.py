"""The local Parasut server holds to Parasut's API v4 where an invoicing sink's correctness depends
on it: OAuth token rotation and expiry, strict validation against the official Swagger, invoice
totals, the e-document flow through trackable jobs and PDFs, the rate limit and injected faults."""

from __future__ import annotations

import time

import httpx
import pytest

from parasut_server import REDIRECT_URI, ParasutServer

JSONAPI = "application/vnd.api+json"
ALPHA_VKN, BETA_VKN = "1234567890", "9876543210"
ALPHA_INBOX = "urn:mail:defaultpk@alpha.test"


def grant(server, **params) -> httpx.Response:
    body = {"grant_type": "password", "client_id": "cid", "client_secret": "csecret",
            "username": "api@example.test", "password": "pw", "redirect_uri": REDIRECT_URI, **params}
    return httpx.post(f"{server.url}/oauth/token", data=body)


def client(server, token: str, timeout: float = 5.0) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/v4/1234", timeout=timeout,
                        headers={"Authorization": f"Bearer {token}", "Content-Type": JSONAPI})


@pytest.fixture
def server():
    # no rate limit here: the flows below make more than 10 requests in 10 s
    with ParasutServer(rate_limit=None, hang_seconds=0.3) as s:
        s.parasut.inboxes = {ALPHA_VKN: [ALPHA_INBOX]}
        yield s


@pytest.fixture
def api(server):
    with client(server, grant(server).json()["access_token"]) as c:
        yield c


def contact_body(name: str, tax_number: str, **attrs) -> dict:
    return {"data": {"type": "contacts", "attributes": {"name": name, "account_type": "customer",
                                                        "contact_type": "company", "tax_number": tax_number,
                                                        **attrs}}}


def create_contact(api, name: str, tax_number: str) -> str:
    r = api.post("/contacts", json=contact_body(name, tax_number))
    assert r.status_code == 201, r.text
    return r.json()["data"]["id"]


def invoice_body(contact_id: str, details: list[dict], currency: str = "TRL", **attrs) -> dict:
    return {"data": {"type": "sales_invoices",
                     "attributes": {"item_type": "invoice", "issue_date": "2024-01-31", "currency": currency,
                                    "description": "January 2024", **attrs},
                     "relationships": {
                         "contact": {"data": {"id": contact_id, "type": "contacts"}},
                         "details": {"data": [{"type": "sales_invoice_details", "attributes": d} for d in details]}}}}


def create_invoice(api, contact_id: str, details: list[dict]) -> dict:
    r = api.post("/sales_invoices", json=invoice_body(contact_id, details))
    assert r.status_code == 201, r.text
    return r.json()["data"]


FEE = {"quantity": 1, "unit_price": 25000, "vat_rate": 20, "description": "Platform fee"}


def e_archive(sales_invoice_id: str) -> dict:
    return {"data": {"type": "e_archives", "attributes": {}, "relationships": {
        "sales_invoice": {"data": {"id": sales_invoice_id, "type": "sales_invoices"}}}}}


def e_invoice(sales_invoice_id: str) -> dict:
    return {"data": {"type": "e_invoices", "attributes": {"scenario": "basic", "to": ALPHA_INBOX}, "relationships": {
        "invoice": {"data": {"id": sales_invoice_id, "type": "sales_invoices"}}}}}


def test_refresh_rotates_both_tokens_and_refuses_the_old_ones(server):
    first = grant(server)
    assert first.status_code == 200
    body = first.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 7200 and body["created_at"] > 0
    refreshed = httpx.post(f"{server.url}/oauth/token", json={
        "grant_type": "refresh_token", "client_id": "cid", "client_secret": "csecret",
        "refresh_token": body["refresh_token"]})
    assert refreshed.status_code == 200
    new = refreshed.json()
    assert new["access_token"] != body["access_token"] and new["refresh_token"] != body["refresh_token"]
    again = httpx.post(f"{server.url}/oauth/token", data={
        "grant_type": "refresh_token", "client_id": "cid", "client_secret": "csecret",
        "refresh_token": body["refresh_token"]})
    assert (again.status_code, again.json()["error"]) == (401, "invalid_grant")
    with client(server, body["access_token"]) as old, client(server, new["access_token"]) as current:
        assert old.get("/contacts").status_code == 401
        assert current.get("/contacts").status_code == 200
    assert server.parasut.token_grants == ["password", "refresh_token"]
    for wrong in ({"password": "nope"}, {"client_secret": "nope"}, {"redirect_uri": "https://example.test"}):
        r = grant(server, **wrong)
        assert (r.status_code, r.json()["error"]) == (401, "invalid_grant")
    assert len(server.parasut.token_grants) == 2


def test_expired_or_missing_access_token_is_refused(server, api):
    assert api.get("/contacts").status_code == 200
    server.parasut.advance(7199)
    assert api.get("/contacts").status_code == 200
    server.parasut.advance(1)
    expired = api.get("/contacts")
    assert expired.status_code == 401 and "expired" in expired.json()["errors"][0]["detail"]
    assert httpx.get(f"{server.url}/v4/1234/contacts").status_code == 401


def test_unknown_or_misspelled_attribute_is_rejected(server, api):
    r = api.post("/contacts", json=contact_body("Alpha", ALPHA_VKN, colour="blue"))
    assert r.status_code == 400
    error = r.json()["errors"][0]
    assert error["title"] == "Invalid request" and "'colour' was unexpected" in error["detail"]
    assert error["detail"].startswith("$.data.attributes")
    r = api.post("/contacts", json={"data": {"type": "contacts", "attributes": {"name": "Alpha"}}})
    assert r.status_code == 400 and "'account_type' is a required property" in r.json()["errors"][0]["detail"]
    wrong_type = {"data": {"type": "customers", "attributes": {"name": "A", "account_type": "customer"}}}
    r = api.post("/contacts", json=wrong_type)
    assert r.status_code == 400 and "$.data.type" in r.json()["errors"][0]["detail"]
    assert [m for m, _, _ in server.parasut.rejected] == ["POST"] * 3
    assert server.parasut.state.contacts == {}


def test_read_only_attribute_is_rejected(server, api):
    cid = create_contact(api, "Alpha", ALPHA_VKN)
    r = api.post("/sales_invoices", json=invoice_body(cid, [FEE], net_total=30000))
    assert r.status_code == 400
    detail = r.json()["errors"][0]["detail"]
    assert detail.startswith("$.data.attributes.net_total") and "read-only" in detail
    r = api.post("/sales_invoices", json=invoice_body(cid, [{**FEE, "net_total": 25000}]))
    assert r.status_code == 400 and "details.data[0].attributes.net_total" in r.json()["errors"][0]["detail"]
    r = api.post("/sales_invoices", json=invoice_body(cid, [{**FEE, "unit_price": "25000"}]))
    assert r.status_code == 400 and "is not of type 'number'" in r.json()["errors"][0]["detail"]
    r = api.post("/sales_invoices", json=invoice_body(cid, [FEE], issue_date="31.01.2024"))
    assert r.status_code == 400 and "is not a 'date'" in r.json()["errors"][0]["detail"]
    assert server.parasut.state.sales_invoices == {}


def test_undeclared_or_malformed_query_parameters_are_rejected(server, api):
    r = api.get("/contacts", params={"filter[foo]": "1"})
    assert r.status_code == 400 and "filter[foo]" in r.json()["errors"][0]["detail"]
    assert api.get("/sales_invoices", params={"filter[contact_id]": "abc"}).status_code == 400
    assert api.get("/sales_invoices", params={"page[size]": "100"}).status_code == 400
    assert api.get("/sales_invoices", params={"include": "details,lines"}).status_code == 400
    assert api.get("/contacts", params={"filter[tax_number]": ALPHA_VKN, "page[size]": "25"}).status_code == 200
    assert len(server.parasut.rejected) == 4


def test_unknown_routes_and_other_companies_are_404(server, api):
    assert api.get("/nothing_here").status_code == 404
    assert api.get(f"{server.url}/v4/999/contacts").status_code == 404
    assert api.get("/contacts/77").status_code == 404
    assert httpx.get(f"{server.url}/v2/1234/contacts").status_code == 404


def test_full_flow_from_contact_to_pdf(server, api):
    fake = server.parasut
    alpha = create_contact(api, "Alpha Ltd", ALPHA_VKN)
    beta = create_contact(api, "Beta Ltd", BETA_VKN)
    found = api.get("/contacts", params={"filter[tax_number]": ALPHA_VKN}).json()
    assert [c["id"] for c in found["data"]] == [alpha]
    assert found["meta"] == {"current_page": 1, "total_pages": 1, "total_count": 1, "per_page": 15}

    # 2.5 x 10.01 = 25.025: half-up on the exact value gives 25.03 (binary floats would give 25.02)
    inv = create_invoice(api, alpha, [FEE, {"quantity": 2.5, "unit_price": 10.01, "vat_rate": 10,
                                            "description": "Extra seats"}])
    a = inv["attributes"]
    assert (a["gross_total"], a["total_vat"], a["net_total"], a["currency"]) == (25025.03, 5002.5, 30027.53, "TRL")
    assert inv["relationships"]["active_e_document"]["data"] is None
    single = create_invoice(api, beta, [FEE])
    assert single["attributes"]["net_total"] == 30000.0

    shown = api.get(f"/sales_invoices/{inv['id']}", params={"include": "details,contact"}).json()
    included = {(r["type"], r["id"]): r for r in shown["included"]}
    assert [t for t, _ in included] == ["sales_invoice_details", "sales_invoice_details", "contacts"]
    assert sorted(r["attributes"]["net_total"] for t, r in included.items() if t[0] == "sales_invoice_details") \
        == [25.03, 25000.0]
    listed = api.get("/sales_invoices", params={"filter[contact_id]": alpha, "filter[issue_date]": "2024-01-31"})
    assert [r["id"] for r in listed.json()["data"]] == [inv["id"]]
    assert fake.sales_invoices_for(ALPHA_VKN)[0]["id"] == inv["id"]

    inbox = api.get("/e_invoice_inboxes", params={"filter[vkn]": ALPHA_VKN}).json()["data"]
    assert [(i["type"], i["attributes"]["vkn"], i["attributes"]["e_invoice_address"]) for i in inbox] \
        == [("e_invoice_inboxes", ALPHA_VKN, ALPHA_INBOX)]
    assert api.get("/e_invoice_inboxes", params={"filter[vkn]": BETA_VKN}).json()["data"] == []

    # the recipient decides the kind: e-invoice users get e-invoices, everyone else e-archives
    assert api.post("/e_invoices", json=e_invoice(single["id"])).status_code == 422
    assert api.post("/e_archives", json=e_archive(inv["id"])).status_code == 422
    job = api.post("/e_invoices", json=e_invoice(inv["id"]))
    assert job.status_code == 201 and job.json()["data"]["type"] == "trackable_jobs"
    assert job.json()["data"]["attributes"]["status"] == "running"
    archive_job = api.post("/e_archives", json=e_archive(single["id"]))
    assert archive_job.status_code == 201
    assert api.post("/e_invoices", json=e_invoice(inv["id"])).status_code == 422  # one e-document per invoice

    job_id = job.json()["data"]["id"]
    statuses = [api.get(f"/trackable_jobs/{job_id}").json()["data"]["attributes"]["status"] for _ in range(3)]
    assert statuses == ["running", "done", "done"]
    shown = api.get(f"/sales_invoices/{inv['id']}", params={"include": "active_e_document"}).json()
    active = shown["data"]["relationships"]["active_e_document"]["data"]
    assert active["type"] == "e_invoices" and shown["included"][0]["id"] == active["id"]
    assert api.get(f"/e_invoices/{active['id']}").json()["data"]["attributes"]["to_address"] == ALPHA_INBOX
    assert api.get(f"/e_archives/{active['id']}").status_code == 404

    assert api.get(f"/e_invoices/{active['id']}/pdf").status_code == 204
    pdf = api.get(f"/e_invoices/{active['id']}/pdf")
    assert pdf.status_code == 200
    data = pdf.json()["data"]
    assert data["type"] == "e_document_pdfs" and data["attributes"]["url"].startswith(f"{server.url}/files/")
    assert "expires_at" in data["attributes"]
    file = httpx.get(data["attributes"]["url"])
    assert file.status_code == 200 and file.headers["content-type"] == "application/pdf"
    assert file.content.startswith(b"%PDF-1.4") and file.content.rstrip().endswith(b"%%EOF")
    assert f"sales invoice {inv['id']}".encode() in file.content and b"30027.53" in file.content
    assert httpx.get(data["attributes"]["url"]).content == file.content
    fake.advance(3601)
    assert httpx.get(data["attributes"]["url"]).status_code == 403

    kinds = [(d["kind"], d["sales_invoice_id"]) for d in fake.e_documents]
    assert kinds == [("e_invoices", inv["id"]), ("e_archives", single["id"])]
    assert fake.e_document_for(inv["id"])["pdf_token"] in data["attributes"]["url"]


def test_vat_rate_must_be_a_turkish_rate(server, api):
    cid = create_contact(api, "Alpha", ALPHA_VKN)
    r = api.post("/sales_invoices", json=invoice_body(cid, [{**FEE, "vat_rate": 19}]))
    assert r.status_code == 422 and "vat_rate 19" in r.json()["errors"][0]["detail"]
    r = api.post("/sales_invoices", json=invoice_body("999", [FEE]))
    assert r.status_code == 422 and "contact 999" in r.json()["errors"][0]["detail"]


def test_rate_limit_answers_429_with_retry_after():
    with ParasutServer() as server:  # Parasut's documented limit: 10 requests in 10 s
        token = grant(server).json()["access_token"]
        with client(server, token) as api:
            assert [api.get("/contacts").status_code for _ in range(9)] == [200] * 9
            eleventh = api.get("/contacts")
            assert eleventh.status_code == 429 and 1 <= int(eleventh.headers["Retry-After"]) <= 10
            assert eleventh.json()["errors"][0]["title"] == "Too Many Requests"
            assert server.parasut.rate_limited == 1
    with ParasutServer(rate_limit=3, rate_window=1.0) as server:
        token = grant(server).json()["access_token"]
        with client(server, token) as api:
            assert [api.get("/contacts").status_code for _ in range(3)] == [200, 200, 429]
            assert api.get("/contacts").headers["Retry-After"] == "1"
            time.sleep(1.0)
            assert api.get("/contacts").status_code == 200
            assert server.parasut.rate_limited == 2


def test_injected_faults(server):
    fake = server.parasut
    token = grant(server).json()["access_token"]
    fake.inject("/v4/1234/contacts", "500", "timeout_before", "timeout_after", "reset", method="POST")
    with client(server, token, timeout=0.15) as api:
        assert api.get("/contacts").status_code == 200  # another method: no fault taken
        r = api.post("/contacts", json=contact_body("A", ALPHA_VKN))
        assert r.status_code == 500 and r.json()["errors"][0]["title"] == "Injected HTTP 500"
        with pytest.raises(httpx.ReadTimeout):
            api.post("/contacts", json=contact_body("A", ALPHA_VKN))
        assert fake.state.contacts == {}  # timed out before processing
        with pytest.raises(httpx.ReadTimeout):
            api.post("/contacts", json=contact_body("A", ALPHA_VKN))
        assert len(fake.contacts_with(ALPHA_VKN)) == 1  # processed, answer lost
        with pytest.raises(httpx.TransportError):
            api.post("/contacts", json=contact_body("A", ALPHA_VKN))
        assert len(fake.contacts_with(ALPHA_VKN)) == 1
        assert api.post("/contacts", json=contact_body("A", ALPHA_VKN)).status_code == 201
    fake.inject("/oauth/token", "503")
    assert grant(server).status_code == 503 and grant(server).status_code == 200


def test_stuck_jobs_keep_running(server, api):
    server.parasut.stuck_jobs = True
    cid = create_contact(api, "Beta", BETA_VKN)
    inv = create_invoice(api, cid, [FEE])
    job = api.post("/e_archives", json=e_archive(inv["id"])).json()["data"]
    statuses = {api.get(f"/trackable_jobs/{job['id']}").json()["data"]["attributes"]["status"] for _ in range(5)}
    assert statuses == {"running"}
    shown = api.get(f"/sales_invoices/{inv['id']}").json()["data"]
    assert shown["relationships"]["active_e_document"]["data"] is None
