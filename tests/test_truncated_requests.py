"""A client killed while sending a request: the part that arrived is not acted on.

The sinks send from several threads, so a kill -9 can land between a request's headers and its
body. Stripe acts on no request it has not fully received; neither may the local server or the kill
proxy. Before they checked, the proxy forwarded the truncated form, the local server created a
customer from it and saved its idempotency key with those parameters, and the re-run's complete
request under the same key was refused ("Keys for idempotent requests can only be used with the
same parameters"): the crash-kill test's rare failure.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse

import pytest

from kill_proxy import KillProxy, KillSwitch
from stripe_server import StripeServer

KEY = "billing:customer:org_c:create"
FORM = b"name=Org+C+Ltd&address[country]=DE&metadata[org_id]=org_c&metadata[contract_ids]=CTR-C&email=c%40org.test"
HEADERS = {"Authorization": "Bearer sk_test_local", "Idempotency-Key": KEY,
           "Content-Type": "application/x-www-form-urlencoded"}


def send_and_die(url: str, sent_bytes: int) -> None:
    """POST /v1/customers announcing the whole form, send ``sent_bytes`` of it, then go away."""
    target = urllib.parse.urlsplit(url)
    head = "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())
    request = f"POST /v1/customers HTTP/1.1\r\nHost: {target.netloc}\r\n{head}Content-Length: {len(FORM)}\r\n\r\n"
    with socket.create_connection((target.hostname, target.port), timeout=10) as sock:
        sock.sendall(request.encode() + FORM[:sent_bytes])
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1024) == b""  # closed without an answer


def send(url: str) -> tuple[int, dict]:
    target = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
    try:
        conn.request("POST", "/v1/customers", body=FORM, headers=HEADERS)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.parametrize("sent_bytes", [0, 1, len(FORM) // 2, len(FORM) - 1])
@pytest.mark.parametrize("through_proxy", [False, True], ids=["server", "kill-proxy"])
def test_a_request_cut_short_is_not_carried_out_and_its_retry_is(sent_bytes, through_proxy):
    switch = KillSwitch()
    with StripeServer() as server, KillProxy(server.url, switch) as proxy:
        url = proxy.url if through_proxy else server.url
        send_and_die(url, sent_bytes)
        assert server.stripe.state.customers == {}
        assert server.stripe.state.idempotency == {}
        assert switch.calls == 0

        status, customer = send(url)
        assert status == 200, customer
        assert (customer["name"], customer["email"], customer["metadata"]) == (
            "Org C Ltd", "c@org.test", {"org_id": "org_c", "contract_ids": "CTR-C"})
        assert [c["id"] for c in server.stripe.state.customers.values()] == [customer["id"]]
        assert switch.calls == (1 if through_proxy else 0)
