"""Every outside system of a month close, local, each holding a distinctive secret the product must
use and never repeat: PostgreSQL (a password in the URL; the machine's server trusts loopback, so
it is sent and ignored), ClickHouse over HTTP (refuses a wrong password, as ClickHouse does), moto
S3 (access and secret key), Stripe (refuses another API key with 401, masked as Stripe does),
Parasut (client secret, user name, password; the OAuth tokens it issues are recorded), TCMB/ECB,
an alert webhook whose URL carries a token (Slack style) and that checks the HMAC signature, and
the audit signing key (Ed25519 PEM)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import secrets as random_secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from moto.server import ThreadedMotoServer

from billing_pipeline.steps.alerts import SIGNATURE_HEADER, verify_signature
from billing_pipeline.stores.audit_bucket import AuditBucket
from billing_pipeline.stores.clickhouse import _chdb_sessions
from clickhouse_http import ClickHouseHttpServer
from fx_server import FxServer
from loopback import LoopbackServer
from parasut_server import ParasutServer
from secret_scan import clean_env
from stripe_server import StripeServer

BUCKET = "billing-audit"
CLICKHOUSE_USER = "billing_reader"
# `billing` as a deployment runs it, logging at INFO (our own code at DEBUG) to stderr
BILLING = [sys.executable, "-c", "import logging, sys; logging.basicConfig(level=logging.INFO); "
           "logging.getLogger('billing_pipeline').setLevel(logging.DEBUG); "
           "from billing_pipeline.cli import main; sys.exit(main(sys.argv[1:]))"]


def _token(prefix: str, special: str = "") -> str:
    return f"{prefix}{special}{random_secrets.token_hex(16)}"


def make_secrets() -> dict[str, str | bytes]:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    return {
        "postgres_password": _token("pgPw", "/!+"),  # must be URL-encoded inside the URL
        "clickhouse_password": _token("chPw", "&="),
        "clickhouse_wrong_password": _token("chWrongPw"),
        "s3_access_key": "AKIA" + random_secrets.token_hex(8).upper(),
        "s3_secret_key": _token("s3Sk", "/+"),
        "audit_signing_key_pem": pem,
        "audit_signing_key_pem_body": "".join(pem.splitlines()[1:-1]),
        "audit_signing_key_raw": raw,
        "stripe_api_key": _token("sk_test_"),
        "stripe_wrong_api_key": _token("sk_test_wrong"),
        "stripe_webhook_secret": _token("whsec_"),
        "parasut_client_secret": _token("psCs", "%&"),
        "parasut_username": _token("api+", "") + "@example.test",
        "parasut_password": _token("psPw", " &="),
        "parasut_wrong_password": _token("psWrongPw"),
        "alert_webhook_secret": _token("alertSig"),
        "alert_webhook_url_token": _token("hookT0k"),
        "openmeter_token": _token("omTok"),
    }


class AlertReceiver(LoopbackServer):
    """The alert webhook: accepts posts to its secret path, checks each signature."""

    def __init__(self, path_token: str, secret: str):
        self.received: list[tuple[bool, dict]] = []  # (signature valid, alert)
        self.fail = False
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.fail or self.path != f"/hooks/{path_token}":
                    self.send_response(503 if receiver.fail else 404)
                else:
                    valid = verify_signature(body, self.headers.get(SIGNATURE_HEADER, ""), secret)
                    receiver.received.append((valid, json.loads(body)))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(Handler)


def guard_clickhouse(server: ClickHouseHttpServer, user: str, password: str) -> None:
    """Refuse any request without the right Basic credentials, as ClickHouse does (code 516)."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    served = server.httpd.RequestHandlerClass

    class Guarded(served):
        def do_POST(self):  # noqa: N802
            if self.headers.get("Authorization") == expected:
                return served.do_POST(self)
            message = (f"Code: 516. DB::Exception: {user}: Authentication failed: password is incorrect, or there "
                       "is no user with such name. (AUTHENTICATION_FAILED) (version 26.1.1.1)").encode()
            self.send_response(403)
            self.send_header("X-ClickHouse-Exception-Code", "516")
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            self.wfile.write(message)

        do_GET = do_POST

    server.httpd.RequestHandlerClass = Guarded


def guard_stripe(server: StripeServer, api_key: str) -> set[str]:
    """Another key is answered 401 with Stripe's own message, the key masked to its last four.
    Returns the set of keys presented."""
    fake, served, presented = server.stripe, server.stripe.handle, set()

    def handle(method, path, params, idempotency_key, key):
        presented.add(key)
        if key != api_key:
            masked = f"{(key or '')[:8]}{'*' * max(0, len(key or '') - 12)}{(key or '')[-4:]}"
            error = {"type": "invalid_request_error", "message": f"Invalid API Key provided: {masked}"}
            return 401, {"error": error}, {}, None
        return served(method, path, params, idempotency_key, key)

    fake.handle = handle
    return presented


def record_parasut_tokens(server: ParasutServer) -> set[str]:
    """Every access and refresh token the fake issues (rotated ones included)."""
    issued: set[str] = set()
    fake, grant = server.parasut, server.parasut._token

    def token(headers, body):
        reply = grant(headers, body)
        if reply.status == 200:
            issued.update((reply.body["access_token"], reply.body["refresh_token"]))
        return reply

    fake._token = token
    return issued


def url_with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username or 'postgres'}:{quote(password, safe='')}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class World:
    secrets: dict[str, str | bytes]
    db_url: str
    state_dir: Path
    s3_endpoint: str
    stripe: StripeServer
    stripe_keys_presented: set[str]
    parasut: ParasutServer
    parasut_tokens: set[str]
    clickhouse: ClickHouseHttpServer
    alerts: AlertReceiver
    fx: FxServer
    env: dict[str, str] = field(default_factory=dict)

    def all_secrets(self) -> dict[str, str | bytes]:
        """The configured secrets and the tokens Parasut issued (sign-in and PDF links)."""
        issued = {f"parasut_token_{i}": t for i, t in enumerate(sorted(self.parasut_tokens))}
        pdf_links = {f"parasut_pdf_link_token_{i}": t for i, t in enumerate(sorted(self.parasut.parasut.state.files))}
        return {**self.secrets, **issued, **pdf_links}

    def cli(self, *args: str, **overrides: str) -> subprocess.CompletedProcess:
        env = {**clean_env(), **self.env, **overrides}
        return subprocess.run([*BILLING, *args], env=env, capture_output=True, text=True, timeout=600)


@contextmanager
def local_world(db_url: str, chdb_path: Path, state_dir: Path):
    s = make_secrets()
    with ExitStack() as stack:
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        stack.callback(moto.stop)
        host, port = moto.get_host_and_port()
        s3_endpoint = f"http://{host}:{port}"
        AuditBucket(BUCKET, s3_endpoint, access_key=s["s3_access_key"], secret_key=s["s3_secret_key"]).create()

        stripe = stack.enter_context(StripeServer())
        presented = guard_stripe(stripe, s["stripe_api_key"])
        parasut = ParasutServer(rate_limit=None, job_seconds_until_done=0.02, client_secret=s["parasut_client_secret"],
                                username=s["parasut_username"], password=s["parasut_password"])
        tokens = record_parasut_tokens(parasut)
        stack.enter_context(parasut)
        parasut.parasut.inboxes["1234567890"] = ["urn:mail:defaultpk@beta.test"]  # org_b: e-Fatura
        clickhouse = ClickHouseHttpServer(_chdb_sessions[str(Path(chdb_path).resolve())])
        guard_clickhouse(clickhouse, CLICKHOUSE_USER, s["clickhouse_password"])
        stack.enter_context(clickhouse)
        alerts = stack.enter_context(AlertReceiver(s["alert_webhook_url_token"], s["alert_webhook_secret"]))
        fx = stack.enter_context(FxServer())
        fx.publish_tcmb(date(2026, 10, 30), {"USD": (1, "34.5678"), "EUR": (1, "37.4321")})
        fx.publish_ecb({date(2026, 10, 30): {"USD": "1.0850", "TRY": "37.6200"}})

        world = World(s, url_with_password(db_url, s["postgres_password"]), state_dir, s3_endpoint, stripe, presented,
                      parasut, tokens, clickhouse, alerts, fx)
        world.env = {
            "BILLING_STATE_DIR": str(state_dir),
            "BILLING_DATABASE_URL": world.db_url,
            "BILLING_CLICKHOUSE_URL": clickhouse.url, "BILLING_CLICKHOUSE_USER": CLICKHOUSE_USER,
            "BILLING_CLICKHOUSE_PASSWORD": s["clickhouse_password"],
            "BILLING_AUDIT_S3_ENDPOINT": s3_endpoint, "BILLING_AUDIT_S3_BUCKET": BUCKET,
            "BILLING_AUDIT_S3_ACCESS_KEY": s["s3_access_key"], "BILLING_AUDIT_S3_SECRET_KEY": s["s3_secret_key"],
            "BILLING_AUDIT_SIGNING_KEY": s["audit_signing_key_pem"],
            "BILLING_STRIPE_API_KEY": s["stripe_api_key"], "BILLING_STRIPE_API_BASE": stripe.url,
            "BILLING_STRIPE_MAX_OPS_PER_SECOND": "200",
            "BILLING_STRIPE_WEBHOOK_SECRET": s["stripe_webhook_secret"],
            "BILLING_TCMB_BASE_URL": fx.tcmb_base, "BILLING_ECB_BASE_URL": fx.ecb_base,
            "BILLING_PARASUT_BASE_URL": parasut.url, "BILLING_PARASUT_COMPANY_ID": "1234",
            "BILLING_PARASUT_CLIENT_ID": "cid", "BILLING_PARASUT_CLIENT_SECRET": s["parasut_client_secret"],
            "BILLING_PARASUT_USERNAME": s["parasut_username"], "BILLING_PARASUT_PASSWORD": s["parasut_password"],
            "BILLING_ALERT_WEBHOOK_URL": f"{alerts.url}/hooks/{s['alert_webhook_url_token']}",
            "BILLING_ALERT_WEBHOOK_SECRET": s["alert_webhook_secret"],
        }
        yield world


def public_key_pem(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deliver(url: str, body: bytes, signature: str) -> tuple[int, dict]:
    """POST a Stripe webhook delivery; (status, JSON answer)."""
    request = urllib.request.Request(url, data=body, headers={"Stripe-Signature": signature,
                                                               "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def stripe_signature(payload: bytes, secret: str, at: int | None = None) -> str:
    at = at or int(time.time())
    digest = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


@dataclass
class WebhookEndpoint:
    url: str
    stdout: str = ""
    stderr: str = ""


@contextmanager
def webhook_endpoint(world: World, port: int):
    """`billing stripe-webhook` in a subprocess until the block ends, then stopped with Ctrl-C
    (SIGINT); its output is on the yielded endpoint afterwards."""
    process = subprocess.Popen([*BILLING, "stripe-webhook", "--port", str(port)], env={**clean_env(), **world.env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    endpoint, lines, ready = WebhookEndpoint(f"http://127.0.0.1:{port}/"), [], threading.Event()

    def read():
        for line in process.stdout:
            lines.append(line)
            if "Stripe webhook endpoint on" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(120), "the webhook endpoint did not start"
        yield endpoint
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, endpoint.stderr = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            _, endpoint.stderr = process.communicate()
        reader.join(5)
        endpoint.stdout = "".join(lines)
