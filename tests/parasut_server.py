"""A local HTTP server speaking the part of Parasut's API v4 an invoicing sink uses, strictly.

Layout as on api.parasut.com: ``POST /oauth/token`` (Doorkeeper password and refresh_token grants;
a refresh rotates both tokens and revokes the old pair) and the API under ``/v4/{company_id}/...``.

Every /v4 request is checked against the official Swagger 2.0 document (loaded once per process):
the operation must exist for that method and path, query parameters must be declared (integer
ones must be integers, ``include`` / ``sort`` / enumerated filters must use the values the
description lists), and a JSON body must validate against the operation's body schema, made
strict: every object with ``properties`` refuses other keys and ``readOnly`` attributes are
refused, so a misspelled or server-computed attribute is a 400 here rather than silently dropped.

The state: contacts, sales invoices with their details (totals computed with Decimal, half-up
to 2 places), e-invoice inboxes set by the test, e-invoice / e-archive creation through trackable
jobs, e-document PDFs that are 204 until ready and then a signed-looking URL on this server that
expires an hour later by the server clock (which tests move with ``advance``). On top: a sliding
window rate limit (10 requests per 10 s, as Parasut documents) and injected faults (HTTP errors,
timeouts before or after processing, connection resets), as in stripe_server.py.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import secrets
import socket
import struct
import threading
import time
import urllib.parse
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError, relevance
from referencing import Registry
from referencing.jsonschema import DRAFT4

from loopback import KeepAliveHandler, LoopbackServer

SWAGGER_FILE = Path(os.environ.get("PARASUT_SWAGGER", "/work/shared/reference/parasut-v4-swagger.yaml"))
SWAGGER_URI = "urn:parasut:v4"  # the strict copy of the document is registered under this base URI
REDIRECT_URI = "urn:ietf:wg:oauth:2.0:oob"
VAT_RATES = {Decimal(r) for r in (0, 1, 8, 10, 18, 20)}
CENT = Decimal("0.01")
JSONAPI = "application/vnd.api+json"
HTTP_METHODS = ("get", "post", "put", "patch", "delete")


# --- the Swagger document, compiled once -------------------------------------------------------

def _resolve(node: dict, root: dict) -> dict:
    """Follow local ``#/...`` references (the document has no remote ones)."""
    while isinstance(node, dict) and "$ref" in node:
        target = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def _strict(schema, root: dict):
    """A copy of a schema that refuses what the API would not accept, walking only schema positions
    (a properties map is a map of names, not a schema: there is a property named "properties")."""
    if isinstance(schema, list):  # "items" may be a list in Draft 4
        return [_strict(s, root) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "allOf" in schema:
        # additionalProperties: false on each branch of an allOf would refuse the other branches'
        # keys, so the branches (all objects here) are merged into one object schema first
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        props, required = {}, []
        for part in schema["allOf"]:
            part = _resolve(part, root)
            if "allOf" in part:
                part = _strict(part, root)
            props.update(part.get("properties", {}))
            required += [r for r in part.get("required", []) if r not in required]
        merged.setdefault("type", "object")
        merged["properties"] = {**props, **merged.get("properties", {})}
        if required:
            merged["required"] = required
        schema = merged
    out = dict(schema)
    if isinstance(out.get("type"), str):
        out["type"] = out["type"].lower()  # the document has one "type: Number"
    if out.get("type") == "string" and "enum" in out:
        out["enum"] = [str(e) for e in out["enum"]]  # ÖTV codes are listed as YAML integers
    if out.get("pattern") == "YYYY-MM-DD":
        # a date format written where a regex belongs: as a regex it would refuse every real date
        del out["pattern"]
        out.setdefault("format", "date")
    if isinstance(out.get("properties"), dict):
        out["properties"] = {name: _strict(s, root) for name, s in out["properties"].items()}
        out.setdefault("additionalProperties", False)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), (dict, list)):
            out[key] = _strict(out[key], root)
    for key in ("anyOf", "oneOf"):
        if key in out:
            out[key] = [_strict(s, root) for s in out[key]]
    return out


def _read_only(validator, value, instance, schema):
    # Draft 4 has no readOnly keyword; here a readOnly property present in a request is an error
    if value is True:
        yield ValidationError("read-only attribute, computed by Parasut: it may not be sent")


# Draft 4 with readOnly enforced; JSON numbers arrive as Decimal, which counts as "number"
StrictValidator = jsonschema.validators.extend(jsonschema.Draft4Validator, {"readOnly": _read_only})
FORMATS = jsonschema.FormatChecker(["date"])
_AVAILABLE = re.compile(r"Available:\s*\*?\s*([^*]+)\*")


@dataclass
class Operation:
    method: str
    template: str  # as in the Swagger, e.g. "/{company_id}/sales_invoices/{id}"
    regex: re.Pattern
    query: dict  # name -> parameter object
    path: dict  # name -> parameter object
    body: str | None  # key of the strict body schema under "bodies", if the operation takes a body
    body_required: bool
    choices: dict  # query parameter name -> allowed comma-separated values (from the description)


class Swagger:
    def __init__(self, path: Path):
        with open(path, "rb") as f:
            doc = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        self.doc = doc
        strict = {"definitions": {n: _strict(s, doc) for n, s in doc["definitions"].items()}, "bodies": {}}
        self.operations: list[Operation] = []
        for template, item in doc["paths"].items():
            if "#" in template:  # "#basic" / "#detailed" are documentation variants of the same path:
                if not template.endswith("#detailed"):  # the fake takes the detailed form (with lines)
                    continue
                template = template.split("#")[0]
            for method, op in item.items():
                if method not in HTTP_METHODS:
                    continue
                params = {(p["in"], p["name"]): p for p in item.get("parameters", []) + op.get("parameters", [])}
                body, body_required = None, False
                for (where, name), p in params.items():
                    if where == "body":
                        body = f"b{len(strict['bodies'])}"  # a plain key: it ends up in a JSON pointer
                        strict["bodies"][body] = _strict(p["schema"], doc)
                        body_required = bool(p.get("required"))
                query = {n: p for (w, n), p in params.items() if w == "query"}
                choices = {}
                for n, p in query.items():
                    m = _AVAILABLE.search(p.get("description") or "")
                    if m:
                        choices[n] = {c.strip() for c in m.group(1).split(",") if c.strip()}
                pattern = "".join(f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") else re.escape(part)
                                  for part in re.split(r"(\{[^}]+\})", template))
                self.operations.append(Operation(
                    method.upper(), template, re.compile(f"^{pattern}$"), query,
                    {n: p for (w, n), p in params.items() if w == "path"}, body, body_required, choices))
        # templates with more literal text first: "/e_smms/{id}.pdf" before "/e_smms/{id}"
        self.operations.sort(key=lambda o: -len(re.sub(r"\{[^}]+\}", "", o.template)))
        self.strict = strict
        self.registry = Registry().with_resource(SWAGGER_URI, DRAFT4.create_resource(strict))
        self._validators: dict[str, jsonschema.protocols.Validator] = {}

    def match(self, method: str, path: str) -> tuple[Operation, dict] | None:
        for op in self.operations:
            if op.method == method:
                m = op.regex.match(path)
                if m:
                    return op, m.groupdict()
        return None

    def body_errors(self, op: Operation, body) -> list[str]:
        """Messages for everything wrong with the body, most relevant first, each with its JSON path."""
        validator = self._validators.get(op.body)
        if validator is None:
            # "#/definitions/..." inside the body schema resolves against the registered document
            ref = f"{SWAGGER_URI}#/bodies/{op.body}"
            validator = StrictValidator({"$ref": ref}, registry=self.registry, format_checker=FORMATS)
            self._validators[op.body] = validator
        errors = sorted(validator.iter_errors(body), key=relevance, reverse=True)
        return [f"{e.json_path}: {e.message}" for e in errors]

    def query_errors(self, op: Operation, query: dict) -> list[str]:
        problems = []
        for name, value in query.items():
            p = op.query.get(name)
            if p is None:
                problems.append(f"unknown query parameter {name!r} for {op.method} {op.template}")
                continue
            if p.get("type") == "integer":
                if not re.fullmatch(r"-?\d+", value):
                    problems.append(f"query parameter {name!r} must be an integer, got {value!r}")
                    continue
                if "minimum" in p and int(value) < p["minimum"] or "maximum" in p and int(value) > p["maximum"]:
                    problems.append(f"query parameter {name!r} must be between {p.get('minimum')} and "
                                    f"{p.get('maximum')}, got {value}")
            if name in op.choices:
                bad = [v for v in (x.strip().removeprefix("-") for x in value.split(",")) if v not in op.choices[name]]
                if bad:
                    problems.append(f"query parameter {name!r}: {', '.join(bad)} not available "
                                    f"(available: {', '.join(sorted(op.choices[name]))})")
        return problems


@functools.cache
def swagger(path: Path = SWAGGER_FILE) -> Swagger:
    return Swagger(path)


# --- errors and documents ----------------------------------------------------------------------

class ApiError(Exception):
    def __init__(self, status: int, title: str, *details: str, headers: dict | None = None):
        super().__init__(title)
        self.status, self.title, self.details, self.headers = status, title, details or (title,), headers or {}

    def body(self) -> dict:
        return {"errors": [{"title": self.title, "detail": d} for d in self.details]}


def not_found(detail: str = "Record not found") -> ApiError:
    return ApiError(404, "Not Found", detail)


def unprocessable(detail: str) -> ApiError:
    return ApiError(422, "Unprocessable Entity", detail)


@dataclass
class Reply:
    status: int
    body: dict | bytes | None = None
    headers: dict = field(default_factory=dict)
    content_type: str = JSONAPI
    after: str | None = None  # a fault to play instead of answering: timeout_before/after, reset


def _json(value) -> bytes:
    # totals are Decimal inside; Parasut sends them as JSON numbers
    return json.dumps(value, default=lambda d: float(d) if isinstance(d, Decimal) else str(d)).encode()


def _flat(value) -> str:
    """A stored attribute as a filter value would spell it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _sort_key(value) -> tuple:
    # numbers sort as numbers (net_total), everything else as text, missing values first
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        return (1, value, "")
    return (0, 0, "") if value is None else (2, 0, _flat(value))


def _money(value) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def _pdf(lines: list[str]) -> bytes:
    """A minimal, well-formed one-page PDF showing the lines (deterministic for the same lines)."""
    esc = [line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for line in lines]
    text = "BT /F1 11 Tf 56 780 Td " + " 0 -16 Td ".join(f"({line}) Tj" for line in esc) + " ET"
    stream = text.encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (n, obj)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


# --- the fake ----------------------------------------------------------------------------------

@dataclass
class Fault:
    path: str  # a prefix of the request path, "" for any
    kind: str  # an HTTP status ("429", "500", ...), "timeout_before", "timeout_after" or "reset"
    method: str | None = None


@dataclass
class ParasutState:
    contacts: dict = field(default_factory=dict)  # id -> {"id", "attributes"}
    # id -> {"id", "attributes", "contact_id", "detail_ids", "active_e_document"}
    sales_invoices: dict = field(default_factory=dict)
    purchase_bills: dict = field(default_factory=dict)  # id -> {"id", "attributes", "supplier_id", "details"}
    details: dict = field(default_factory=dict)  # id -> {"id", "attributes", "sales_invoice_id"}
    # id -> {"id", "kind", "sales_invoice_id", "status", "errors", "polls", "form", "to"}
    jobs: dict = field(default_factory=dict)
    documents: dict = field(default_factory=dict)  # id -> {"id", "kind", "sales_invoice_id", "attributes", "pdf_polls"}
    files: dict = field(default_factory=dict)  # pdf token -> {"document_id", "expires_at"}
    inbox_ids: dict = field(default_factory=dict)  # (vkn, address) -> id
    access_tokens: dict = field(default_factory=dict)  # token -> {"expires_at", "refresh_token"}
    refresh_tokens: dict = field(default_factory=dict)  # token -> its access token
    seq: int = 0


class FakeParasut:
    def __init__(self, company_id: int = 1234, client_id: str = "cid", client_secret: str = "csecret",
                 username: str = "api@example.test", password: str = "pw", expires_in: int = 7200,
                 rate_limit: int | None = 10, rate_window: float = 10.0, hang_seconds: float = 3.0,
                 job_polls_until_done: int = 1, pdf_polls_until_ready: int = 1, swagger_path: Path = SWAGGER_FILE,
                 job_seconds_until_done: float = 0.3):
        self.swagger = swagger(swagger_path)
        self.company_id = company_id
        self.client_id, self.client_secret = client_id, client_secret
        self.username, self.password = username, password
        self.expires_in = expires_in
        self.rate_limit, self.rate_window = rate_limit, rate_window
        self.hang_seconds = hang_seconds
        self.job_polls_until_done = job_polls_until_done
        # Parasut works jobs off in the background: a job is done after this long even if nobody polls it
        self.job_seconds_until_done = job_seconds_until_done
        self.pdf_polls_until_ready = pdf_polls_until_ready
        self.stuck_jobs = False  # trackable jobs stay "running" forever
        self.job_error: str | None = None  # jobs finishing from now on end in status "error" with this message
        self.inboxes: dict[str, list[str]] = {}  # VKN -> e-invoice addresses ("urn:mail:defaultpk@...")
        self.base_url = "http://parasut.invalid"  # set by ParasutServer; used in PDF URLs
        self.state = ParasutState()
        self.lock = threading.RLock()
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, str]] = []  # (method, path, query string)
        self.rejected: list[tuple[str, str, str]] = []  # (method, path, detail) of 400s from validation
        self.token_grants: list[str] = []  # grant_type of each token granted
        self.e_documents: list[dict] = []  # {"kind", "sales_invoice_id", "job_id", "document_id", "pdf_token"}
        self.rate_limited = 0
        self._offset = 0.0  # seconds the tests moved the server clock
        self._window: deque[float] = deque()  # monotonic times of the requests let through

    # --- test controls and accessors ---
    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the server clock (token and PDF URL expiry) forward."""
        with self.lock:
            self._offset += seconds

    def inject(self, path: str, *kinds: str, method: str | None = None) -> None:
        with self.lock:
            self.faults.extend(Fault(path, k, method) for k in kinds)

    def revoke_tokens(self) -> None:
        """Revoke every access and refresh token, as a password change would."""
        with self.lock:
            self.state.access_tokens.clear()
            self.state.refresh_tokens.clear()

    def contacts_with(self, tax_number: str) -> list[dict]:
        with self.lock:
            return [c for c in self.state.contacts.values() if c["attributes"].get("tax_number") == tax_number]

    def sales_invoices_for(self, contact_tax_number: str) -> list[dict]:
        """Stored sales invoices of the contacts with that tax number, details attached (Decimal values)."""
        with self.lock:
            ids = {c["id"] for c in self.contacts_with(contact_tax_number)}
            return [{**inv, "details": [self.state.details[d]["attributes"] for d in inv["detail_ids"]]}
                    for inv in self.state.sales_invoices.values() if inv["contact_id"] in ids]

    def e_document_for(self, sales_invoice_id: str) -> dict | None:
        with self.lock:
            return next((d for d in self.e_documents if d["sales_invoice_id"] == str(sales_invoice_id)), None)

    def writes(self) -> int:
        with self.lock:
            return sum(1 for m, p, _ in self.requests if m != "GET" and p.startswith("/v4/"))

    # --- request handling ---
    def _work_off_jobs(self) -> None:
        if self.stuck_jobs:
            return
        due = time.monotonic() - self.job_seconds_until_done
        for job in list(self.state.jobs.values()):
            if job["status"] == "running" and job["created"] <= due:
                self._finish(job)

    def handle(self, method: str, path: str, query: str, headers, body: bytes) -> Reply:
        with self.lock:
            self._work_off_jobs()
            self.requests.append((method, path, query))
            if self.rate_limit is not None and (path.startswith("/v4/") or path.startswith("/oauth/")):
                wait = self._rate_wait()
                if wait:
                    self.rate_limited += 1
                    return Reply(429, ApiError(429, "Too Many Requests", "Rate limit exceeded").body(),
                                 {"Retry-After": str(wait)})
            fault = self._take_fault(method, path)
            if fault and fault.kind.isdigit():
                status = int(fault.kind)
                extra = {"Retry-After": "1"} if status == 429 else {}
                return Reply(status, ApiError(status, f"Injected HTTP {status}").body(), extra)
            if fault and fault.kind in ("timeout_before", "reset"):
                return Reply(0, after=fault.kind)
            try:
                reply = self._dispatch(method, path, query, headers, body)
            except ApiError as exc:
                reply = Reply(exc.status, exc.body(), exc.headers)
            if fault:  # timeout_after: processed, but the answer never leaves
                reply.after = fault.kind
            return reply

    def _rate_wait(self) -> int:
        """0 if the request may go (and counts it), else whole seconds until a slot frees."""
        now = time.monotonic()
        while self._window and now - self._window[0] >= self.rate_window:
            self._window.popleft()
        if len(self._window) < self.rate_limit:
            self._window.append(now)
            return 0
        return max(1, math.ceil(self._window[0] + self.rate_window - now))

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for i, f in enumerate(self.faults):
            if path.startswith(f.path) and (f.method is None or f.method == method):
                return self.faults.pop(i)
        return None

    def _id(self) -> str:
        self.state.seq += 1
        return str(self.state.seq)

    def _stamp(self, offset: float = 0.0) -> str:
        return datetime.fromtimestamp(self.now() + offset, timezone.utc).isoformat(timespec="seconds")

    def _dispatch(self, method: str, path: str, query: str, headers, body: bytes) -> Reply:
        if path == "/oauth/token":
            if method != "POST":
                raise not_found()
            return self._token(headers, body)
        m = re.fullmatch(r"/files/([A-Za-z0-9_-]+)\.pdf", path)
        if m and method == "GET":
            return self._file(m.group(1))
        if path.startswith("/v4/"):
            return self._api(method, path, query, headers, body)
        raise not_found(f"No route matches {method} {path}")

    # --- OAuth (Doorkeeper) ---
    def _token(self, headers, body: bytes) -> Reply:
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip()
        try:
            if ctype == "application/json":
                params = {k: str(v) for k, v in json.loads(body or b"{}").items()}
            else:
                params = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
        except (ValueError, AttributeError):
            return Reply(400, {"error": "invalid_request"}, content_type="application/json")
        grant = params.get("grant_type")
        refused = Reply(401, {"error": "invalid_grant", "error_description": "The provided authorization grant is "
                              "invalid, expired, revoked, does not match the redirection URI used in the authorization "
                              "request, or was issued to another client."}, content_type="application/json")
        if grant not in ("password", "refresh_token"):
            return Reply(400, {"error": "unsupported_grant_type"}, content_type="application/json")
        if (params.get("client_id"), params.get("client_secret")) != (self.client_id, self.client_secret):
            return refused
        s = self.state
        if grant == "password":
            if (params.get("username"), params.get("password")) != (self.username, self.password):
                return refused
            if params.get("redirect_uri") != REDIRECT_URI:
                return refused
        else:
            old = s.refresh_tokens.pop(params.get("refresh_token") or "", None)
            if old is None:
                return refused
            s.access_tokens.pop(old, None)  # Doorkeeper revokes the previous pair on refresh
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        s.access_tokens[access] = {"expires_at": self.now() + self.expires_in, "refresh_token": refresh}
        s.refresh_tokens[refresh] = access
        self.token_grants.append(grant)
        return Reply(200, {"access_token": access, "token_type": "bearer", "expires_in": self.expires_in,
                           "refresh_token": refresh, "created_at": int(self.now())}, content_type="application/json")

    def _authorize(self, headers) -> None:
        auth = headers.get("Authorization") or ""
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        grant = self.state.access_tokens.get(token)
        if grant is None or grant["expires_at"] <= self.now():
            why = "expired" if grant else ("missing" if not token else "invalid or revoked")
            raise ApiError(401, "Unauthorized", f"The access token is {why}",
                           headers={"WWW-Authenticate": 'Bearer realm="Doorkeeper", error="invalid_token"'})

    # --- /v4 ---
    def _api(self, method: str, path: str, query: str, headers, body: bytes) -> Reply:
        self._authorize(headers)
        found = self.swagger.match(method, path[len("/v4"):])
        if found is None:
            raise not_found(f"No route matches {method} {path}")
        op, path_params = found
        if path_params.get("company_id") != str(self.company_id):
            raise not_found(f"No company {path_params.get('company_id')}")
        for name, p in op.path.items():
            if p.get("type") == "integer" and not re.fullmatch(r"\d+", path_params.get(name, "")):
                raise not_found()
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        problems = self.swagger.query_errors(op, params)
        document = None
        if not problems and op.body is not None:
            ctype = (headers.get("Content-Type") or "").split(";")[0].strip()
            if ctype not in (JSONAPI, "application/json"):
                raise ApiError(415, "Unsupported Media Type", f"Content-Type must be {JSONAPI} or application/json")
            try:
                document = json.loads(body.decode() or "null", parse_float=Decimal)
            except ValueError as exc:
                problems = [f"$: body is not JSON ({exc})"]
            else:
                if document is None and op.body_required:
                    problems = ["$: a body is required"]
                elif document is not None:
                    problems = self.swagger.body_errors(op, document)
        if problems:
            self.rejected.append((method, path, problems[0]))
            raise ApiError(400, "Invalid request", *problems[:10])
        handler = self._HANDLERS.get((method, op.template))
        if handler is None:
            raise not_found(f"{method} {op.template} is in the Swagger but not served by this fake")
        return handler(self, path_params, params, document)

    def _page(self, resources: list[dict], params: dict, op_defaults=(1, 15)) -> dict:
        number = int(params.get("page[number]", op_defaults[0]))
        size = int(params.get("page[size]", op_defaults[1]))
        start = (max(number, 1) - 1) * size
        return {"data": resources[start:start + size],
                "meta": {"current_page": number, "total_pages": math.ceil(len(resources) / size),
                         "total_count": len(resources), "per_page": size}}

    @staticmethod
    def _filtered(records: list[dict], params: dict, special: dict) -> list[dict]:
        """Apply filter[x]: a special matcher if given, else equality on the attribute when it exists."""
        for key, value in params.items():
            m = re.fullmatch(r"filter\[(\w+)\]", key)
            if not m:
                continue
            name = m.group(1)
            if name in special:
                records = [r for r in records if special[name](r, value)]
            else:
                records = [r for r in records
                           if name not in r["attributes"] or _flat(r["attributes"][name]) == value]
        return records

    @staticmethod
    def _sorted(records: list[dict], sort: str | None) -> list[dict]:
        records = sorted(records, key=lambda r: int(r["id"]))
        for key in reversed((sort or "id").split(",")):
            name = key.strip().removeprefix("-")
            get = (lambda r: int(r["id"])) if name == "id" else (lambda r, n=name: _sort_key(r["attributes"].get(n)))
            records = sorted(records, key=get, reverse=key.strip().startswith("-"))
        return records

    @staticmethod
    def _attrs(document: dict) -> tuple[dict, dict]:
        data = document["data"]
        if data.get("id"):
            raise unprocessable("data.id must be empty when creating a record")
        return data.get("attributes") or {}, data.get("relationships") or {}

    @staticmethod
    def _related(relationships: dict, name: str, kind: str) -> str:
        data = (relationships.get(name) or {}).get("data")
        if not data or not data.get("id"):
            raise unprocessable(f"relationships.{name} is required")
        if data.get("type") not in (None, kind):
            raise unprocessable(f"relationships.{name} must be of type {kind}")
        return str(data["id"])

    # contacts
    def _contact_resource(self, c: dict) -> dict:
        return {"id": c["id"], "type": "contacts", "attributes": c["attributes"],
                "relationships": {"category": {"data": None}, "contact_people": {"data": []}}}

    def _create_contact(self, path_params, params, document) -> Reply:
        attrs, rels = self._attrs(document)
        if not attrs:
            raise unprocessable("data.attributes is required")
        if any((rels.get(r) or {}).get("data") for r in rels):
            raise unprocessable("contact relationships (category, contact_people) are not modelled by this fake")
        stamp = self._stamp()
        contact = {"id": self._id(), "attributes": {
            "contact_type": "company", "balance": Decimal(0), "trl_balance": Decimal(0), "usd_balance": Decimal(0),
            "eur_balance": Decimal(0), "gbp_balance": Decimal(0), "archived": False, **attrs,
            "created_at": stamp, "updated_at": stamp}}
        self.state.contacts[contact["id"]] = contact
        return Reply(201, {"data": self._contact_resource(contact)})

    def _list_contacts(self, path_params, params, document) -> Reply:
        records = self._filtered(list(self.state.contacts.values()), params, {})
        records = self._sorted(records, params.get("sort"))  # Parasut's default is -balance; all are 0 here
        return Reply(200, self._page([self._contact_resource(c) for c in records], params))

    def _show_contact(self, path_params, params, document) -> Reply:
        c = self.state.contacts.get(path_params["id"]) or self._raise(not_found())
        return Reply(200, {"data": self._contact_resource(c)})

    # sales invoices
    def _invoice_resource(self, inv: dict) -> dict:
        return {"id": inv["id"], "type": "sales_invoices", "attributes": inv["attributes"], "relationships": {
            "contact": {"data": {"id": inv["contact_id"], "type": "contacts"}},
            "details": {"data": [{"id": d, "type": "sales_invoice_details"} for d in inv["detail_ids"]]},
            "active_e_document": {"data": inv["active_e_document"]}}}

    def _included(self, invoices: list[dict], include: str | None) -> list[dict]:
        wanted = {w.strip() for w in (include or "").split(",") if w.strip()}
        out, seen = [], set()

        def add(resource):
            if (resource["type"], resource["id"]) not in seen:
                seen.add((resource["type"], resource["id"]))
                out.append(resource)
        for inv in invoices:
            if "details" in wanted:
                for d in inv["detail_ids"]:
                    detail = self.state.details[d]
                    add({"id": d, "type": "sales_invoice_details", "attributes": detail["attributes"],
                         "relationships": {"product": {"data": None}, "warehouse": {"data": None}}})
            if "contact" in wanted:
                add(self._contact_resource(self.state.contacts[inv["contact_id"]]))
            if "active_e_document" in wanted and inv["active_e_document"]:
                add(self._document_resource(self.state.documents[inv["active_e_document"]["id"]]))
        return out  # other available includes (category, payments, tags, ...) are not modelled: empty

    def _with_included(self, payload: dict, invoices: list[dict], params: dict) -> dict:
        if params.get("include"):
            payload["included"] = self._included(invoices, params["include"])
        return payload

    def _create_sales_invoice(self, path_params, params, document) -> Reply:
        attrs, rels = self._attrs(document)
        if not attrs:
            raise unprocessable("data.attributes is required")
        contact_id = self._related(rels, "contact", "contacts")
        if contact_id not in self.state.contacts:
            raise unprocessable(f"contact {contact_id} does not exist")
        for name in ("category", "tags", "sales_offer"):
            if (rels.get(name) or {}).get("data"):
                raise unprocessable(f"relationships.{name} is not modelled by this fake")
        for name in ("invoice_discount", "withholding_rate"):
            if attrs.get(name):
                raise unprocessable(f"{name} is not modelled by this fake (totals would be wrong)")
        details = (rels.get("details") or {}).get("data") or []
        if not details:
            raise unprocessable("a sales invoice needs at least one detail (relationships.details.data)")
        rows = []
        for i, d in enumerate(details):
            a = d.get("attributes")
            if d.get("id"):
                raise unprocessable(f"details[{i}].id must be empty when creating a sales invoice")
            if not a:
                raise unprocessable(f"details[{i}].attributes is required")
            if Decimal(a["vat_rate"]) not in VAT_RATES:
                raise unprocessable(f"details[{i}]: vat_rate {a['vat_rate']} is not a valid KDV rate "
                                    f"(allowed: 0, 1, 8, 10, 18, 20)")
            for name in ("excise_duty_value", "communications_tax_rate", "vat_withholding_rate"):
                if a.get(name):
                    raise unprocessable(f"details[{i}].{name} is not modelled by this fake (totals would be wrong)")
            if ((d.get("relationships") or {}).get("product") or {}).get("data"):
                raise unprocessable(f"details[{i}]: products are not modelled by this fake")
            line = _money(Decimal(a["quantity"]) * Decimal(a["unit_price"]))
            discount = self._line_discount(i, a, line)
            vat = _money((line - discount) * Decimal(a["vat_rate"]) / 100)
            rows.append((a, line, discount, vat))
        gross = sum((line for _, line, _, _ in rows), Decimal("0.00"))
        total_discount = sum((discount for _, _, discount, _ in rows), Decimal("0.00"))
        total_vat = sum((vat for *_, vat in rows), Decimal("0.00"))
        net_total = gross - total_discount + total_vat
        rate = Decimal(attrs.get("exchange_rate") or 1)
        stamp = self._stamp()
        zero = Decimal("0.00")
        inv_id = self._id()
        detail_ids = []
        for a, line, discount, _vat in rows:
            detail = {"id": self._id(), "sales_invoice_id": inv_id, "attributes": {
                **a, "net_total": line - discount, "vat_withholding": zero, "created_at": stamp, "updated_at": stamp}}
            self.state.details[detail["id"]] = detail
            detail_ids.append(detail["id"])
        series, number = attrs.get("invoice_series"), attrs.get("invoice_id")
        invoice = {"id": inv_id, "contact_id": contact_id, "detail_ids": detail_ids, "active_e_document": None,
                   "attributes": {
                       "currency": "TRL", **attrs,
                       "gross_total": gross, "total_vat": total_vat, "net_total": net_total,
                       "before_taxes_total": gross - total_discount, "remaining": net_total,
                       "remaining_in_trl": _money(net_total * rate),
                       "total_discount": total_discount, "total_invoice_discount": zero, "total_excise_duty": zero,
                       "total_communications_tax": zero, "total_vat_withholding": zero, "withholding": zero,
                       "payment_status": "unpaid", "archived": False,
                       "invoice_no": f"{series or ''}{number}" if number is not None else None,
                       "created_at": stamp, "updated_at": stamp}}
        self.state.sales_invoices[inv_id] = invoice
        return Reply(201, self._with_included({"data": self._invoice_resource(invoice)}, [invoice], params))

    @staticmethod
    def _line_discount(i: int, a: dict, line: Decimal) -> Decimal:
        """A detail's discount: Parasut takes an amount or a percentage; only the amount is modelled
        (how Parasut rounds a percentage is not known here)."""
        if not a.get("discount_value"):
            return Decimal("0.00")
        if a.get("discount_type") != "amount":
            raise unprocessable(f"details[{i}].discount_type {a.get('discount_type')!r} is not modelled by this "
                                "fake (only 'amount')")
        discount = _money(Decimal(a["discount_value"]))
        if discount < 0 or discount > line:
            raise unprocessable(f"details[{i}].discount_value {discount} is outside 0..{line} (the line's amount)")
        return discount

    def _list_sales_invoices(self, path_params, params, document) -> Reply:
        special = {
            "contact_id": lambda r, v: r["contact_id"] == v,
            "item_type": lambda r, v: r["attributes"].get("item_type") in {x.strip() for x in v.split(",")},
        }
        records = self._filtered(list(self.state.sales_invoices.values()), params, special)
        records = self._sorted(records, params.get("sort"))
        payload = self._page(records, params)
        page = payload["data"]
        payload["data"] = [self._invoice_resource(r) for r in page]
        return Reply(200, self._with_included(payload, page, params))

    def _show_sales_invoice(self, path_params, params, document) -> Reply:
        inv = self.state.sales_invoices.get(path_params["id"]) or self._raise(not_found())
        return Reply(200, self._with_included({"data": self._invoice_resource(inv)}, [inv], params))

    # purchase bills: a sales refund (iade) is a purchase bill of item_type "refund" from the customer
    def _bill_resource(self, bill: dict) -> dict:
        return {"id": bill["id"], "type": "purchase_bills", "attributes": bill["attributes"], "relationships": {
            "supplier": {"data": {"id": bill["supplier_id"], "type": "contacts"}}}}

    def _create_purchase_bill(self, path_params, params, document) -> Reply:
        attrs, rels = self._attrs(document)
        supplier_id = self._related(rels, "supplier", "contacts")
        if supplier_id not in self.state.contacts:
            raise unprocessable(f"contact {supplier_id} does not exist")
        for name in ("invoice_discount", "withholding_rate"):
            if attrs.get(name):
                raise unprocessable(f"{name} is not modelled by this fake (totals would be wrong)")
        details = (rels.get("details") or {}).get("data") or []
        if not details:
            raise unprocessable("a detailed purchase bill needs at least one detail (relationships.details.data)")
        gross = total_vat = Decimal("0.00")
        for i, d in enumerate(details):
            a = d.get("attributes") or self._raise(unprocessable(f"details[{i}].attributes is required"))
            if Decimal(a["vat_rate"]) not in VAT_RATES:
                raise unprocessable(f"details[{i}]: vat_rate {a['vat_rate']} is not a valid KDV rate")
            if Decimal(a["quantity"]) <= 0 or Decimal(a["unit_price"]) < 0:
                raise unprocessable(f"details[{i}]: quantity must be positive and unit_price not negative")
            net = _money(Decimal(a["quantity"]) * Decimal(a["unit_price"]))
            gross += net
            total_vat += _money(net * Decimal(a["vat_rate"]) / 100)
        stamp = self._stamp()
        bill = {"id": self._id(), "supplier_id": supplier_id, "details": details, "attributes": {
            **attrs, "gross_total": gross, "total_vat": total_vat, "net_total": gross + total_vat,
            "remaining": gross + total_vat, "payment_status": "unpaid", "archived": False,
            "created_at": stamp, "updated_at": stamp}}
        self.state.purchase_bills[bill["id"]] = bill
        return Reply(201, {"data": self._bill_resource(bill)})

    def _list_purchase_bills(self, path_params, params, document) -> Reply:
        special = {"supplier_id": lambda r, v: r["supplier_id"] == v,
                   "item_type": lambda r, v: r["attributes"].get("item_type") in {x.strip() for x in v.split(",")}}
        records = self._sorted(self._filtered(list(self.state.purchase_bills.values()), params, special),
                               params.get("sort"))
        return Reply(200, self._page([self._bill_resource(r) for r in records], params))

    def _show_purchase_bill(self, path_params, params, document) -> Reply:
        bill = self.state.purchase_bills.get(path_params["id"]) or self._raise(not_found())
        return Reply(200, {"data": self._bill_resource(bill)})

    # e-documents
    def _inbox_list(self) -> list[tuple[str, str]]:
        return [(str(vkn), address) for vkn, addresses in self.inboxes.items() for address in addresses]

    def _list_inboxes(self, path_params, params, document) -> Reply:
        rows = [(v, a) for v, a in self._inbox_list() if "filter[vkn]" not in params or v == params["filter[vkn]"]]
        resources = []
        for vkn, address in rows:
            ident = self.state.inbox_ids.get((vkn, address)) or self._id()
            self.state.inbox_ids[(vkn, address)] = ident
            resources.append({"id": ident, "type": "e_invoice_inboxes", "relationships": {}, "attributes": {
                "vkn": vkn, "e_invoice_address": address, "name": f"Inbox of {vkn}", "inbox_type": "PK",
                "address_registered_at": "2020-01-01T00:00:00+00:00", "registered_at": "2020-01-01T00:00:00+00:00",
                "created_at": "2020-01-01", "updated_at": "2020-01-01"}})
        return Reply(200, self._page(resources, params))

    def _create_e_document(self, kind: str, relationship: str, document: dict) -> Reply:
        attrs, rels = self._attrs(document)
        inv_id = self._related(rels, relationship, "sales_invoices")
        inv = self.state.sales_invoices.get(inv_id)
        if inv is None:
            raise unprocessable(f"sales invoice {inv_id} does not exist")
        for detail_id in inv["detail_ids"]:  # GIB refuses a negative line: a discount is a line's allowance
            if Decimal(self.state.details[detail_id]["attributes"]["net_total"]) < 0:
                raise unprocessable(f"sales invoice {inv_id}: detail {detail_id} is negative; an e-document takes "
                                    "no negative line (give the lines a discount_value instead)")
        contact = self.state.contacts[inv["contact_id"]]
        vkn = str(contact["attributes"].get("tax_number") or "")
        addresses = [a for v, a in self._inbox_list() if v == vkn]
        if kind == "e_invoices":
            if not addresses:
                raise unprocessable(f"tax number {vkn or '(none)'} has no e-invoice inbox: "
                                    f"the recipient is not an e-invoice user, send an e-archive")
            if attrs.get("to") and attrs["to"] not in addresses:
                raise unprocessable(f"{attrs['to']} is not an e-invoice inbox of {vkn}")
        elif addresses:
            raise unprocessable(f"tax number {vkn} is an e-invoice user: send an e-invoice, not an e-archive")
        if inv["active_e_document"] or any(j["sales_invoice_id"] == inv_id and j["status"] != "error"
                                           for j in self.state.jobs.values()):
            raise unprocessable(f"sales invoice {inv_id} already has an e-document")
        job = {"id": self._id(), "kind": kind, "sales_invoice_id": inv_id, "status": "running", "errors": [],
               "polls": 0, "form": attrs, "to": attrs.get("to") or (addresses[0] if addresses else None),
               "created": time.monotonic()}
        self.state.jobs[job["id"]] = job
        self.e_documents.append({"kind": kind, "sales_invoice_id": inv_id, "job_id": job["id"],
                                 "document_id": None, "pdf_token": None})
        return Reply(201, {"data": self._job_resource(job)})

    def _create_e_invoice(self, path_params, params, document) -> Reply:
        return self._create_e_document("e_invoices", "invoice", document)

    def _create_e_archive(self, path_params, params, document) -> Reply:
        return self._create_e_document("e_archives", "sales_invoice", document)

    @staticmethod
    def _job_resource(job: dict) -> dict:
        return {"id": job["id"], "type": "trackable_jobs", "relationships": {},
                "attributes": {"status": job["status"], "errors": job["errors"]}}

    def _show_job(self, path_params, params, document) -> Reply:
        job = self.state.jobs.get(path_params["id"]) or self._raise(not_found())
        if job["status"] == "running" and not self.stuck_jobs:
            job["polls"] += 1
            if job["polls"] > self.job_polls_until_done:
                self._finish(job)
        return Reply(200, {"data": self._job_resource(job)})

    def _finish(self, job: dict) -> None:
        entry = next(d for d in self.e_documents if d["job_id"] == job["id"])
        if self.job_error:
            job.update(status="error", errors=[self.job_error])
            self.e_documents.remove(entry)  # nothing was issued: the invoice may be sent again
            return
        inv = self.state.sales_invoices[job["sales_invoice_id"]]
        contact = self.state.contacts[inv["contact_id"]]
        ia = inv["attributes"]
        doc_id, stamp = self._id(), self._stamp()
        common = {"uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"parasut:{job['kind']}:{doc_id}")),
                  "created_at": stamp, "updated_at": stamp}
        if job["kind"] == "e_invoices":
            attrs = {**common, "status": "successful", "direction": "outbound",
                     "scenario": job["form"].get("scenario", "basic"), "to_address": job["to"],
                     "to_vkn": contact["attributes"].get("tax_number"),
                     "contact_name": contact["attributes"].get("name"),
                     "net_total": ia["net_total"], "currency": ia.get("currency", "TRL"),
                     "issue_date": ia.get("issue_date"), "item_type": "invoice", "is_expired": False}
        else:
            attrs = {**common, "status": "sent", "vkn": contact["attributes"].get("tax_number"),
                     "invoice_number": f"PRS{int(doc_id):013d}", "is_signed": True, "is_printed": False}
        self.state.documents[doc_id] = {"id": doc_id, "kind": job["kind"], "sales_invoice_id": inv["id"],
                                        "attributes": attrs, "pdf_polls": 0}
        inv["active_e_document"] = {"id": doc_id, "type": job["kind"]}
        job["status"] = "done"
        entry["document_id"] = doc_id

    def _document_resource(self, doc: dict) -> dict:
        rel = "invoice" if doc["kind"] == "e_invoices" else "sales_invoice"
        return {"id": doc["id"], "type": doc["kind"], "attributes": doc["attributes"],
                "relationships": {rel: {"data": {"id": doc["sales_invoice_id"], "type": "sales_invoices"}}}}

    def _document(self, kind: str, ident: str) -> dict:
        doc = self.state.documents.get(ident)
        if doc is None or doc["kind"] != kind:
            raise not_found()
        return doc

    def _show_e_invoice(self, path_params, params, document) -> Reply:
        return Reply(200, {"data": self._document_resource(self._document("e_invoices", path_params["id"]))})

    def _show_e_archive(self, path_params, params, document) -> Reply:
        return Reply(200, {"data": self._document_resource(self._document("e_archives", path_params["id"]))})

    def _pdf_of(self, kind: str, ident: str) -> Reply:
        doc = self._document(kind, ident)
        doc["pdf_polls"] += 1
        if doc["pdf_polls"] <= self.pdf_polls_until_ready:
            return Reply(204)  # still being rendered: ask again
        token = secrets.token_urlsafe(16)
        expires = self.now() + 3600
        self.state.files[token] = {"document_id": doc["id"], "expires_at": expires}
        next(d for d in self.e_documents if d["document_id"] == doc["id"])["pdf_token"] = token
        return Reply(200, {"data": {"id": doc["id"], "type": "e_document_pdfs", "relationships": {}, "attributes": {
            "url": f"{self.base_url}/files/{token}.pdf", "expires_at": self._stamp(3600)}}})

    def _e_invoice_pdf(self, path_params, params, document) -> Reply:
        return self._pdf_of("e_invoices", path_params["id"])

    def _e_archive_pdf(self, path_params, params, document) -> Reply:
        return self._pdf_of("e_archives", path_params["id"])

    def _file(self, token: str) -> Reply:
        f = self.state.files.get(token)
        if f is None or f["expires_at"] <= self.now():
            # what the storage behind a signed URL answers: no JSON:API here
            return Reply(403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                         content_type="application/xml")
        doc = self.state.documents[f["document_id"]]
        inv = self.state.sales_invoices[doc["sales_invoice_id"]]
        a = inv["attributes"]
        label = "e-Fatura" if doc["kind"] == "e_invoices" else "e-Arsiv Fatura"
        return Reply(200, _pdf([f"{label} {doc['attributes']['uuid']}",
                                f"sales invoice {inv['id']}",
                                f"issue date {a.get('issue_date')}",
                                f"net_total {a['net_total']} {a.get('currency', 'TRL')}"]),
                     content_type="application/pdf")

    @staticmethod
    def _raise(exc: ApiError):
        raise exc

    _HANDLERS = {
        ("POST", "/{company_id}/contacts"): _create_contact,
        ("GET", "/{company_id}/contacts"): _list_contacts,
        ("GET", "/{company_id}/contacts/{id}"): _show_contact,
        ("POST", "/{company_id}/sales_invoices"): _create_sales_invoice,
        ("GET", "/{company_id}/sales_invoices"): _list_sales_invoices,
        ("GET", "/{company_id}/sales_invoices/{id}"): _show_sales_invoice,
        ("GET", "/{company_id}/e_invoice_inboxes"): _list_inboxes,
        ("POST", "/{company_id}/purchase_bills"): _create_purchase_bill,
        ("GET", "/{company_id}/purchase_bills"): _list_purchase_bills,
        ("GET", "/{company_id}/purchase_bills/{id}"): _show_purchase_bill,
        ("POST", "/{company_id}/e_invoices"): _create_e_invoice,
        ("POST", "/{company_id}/e_archives"): _create_e_archive,
        ("GET", "/{company_id}/e_invoices/{id}"): _show_e_invoice,
        ("GET", "/{company_id}/e_archives/{id}"): _show_e_archive,
        ("GET", "/{company_id}/e_invoices/{id}/pdf"): _e_invoice_pdf,
        ("GET", "/{company_id}/e_archives/{id}/pdf"): _e_archive_pdf,
        ("GET", "/{company_id}/trackable_jobs/{id}"): _show_job,
    }


class ParasutServer(LoopbackServer):
    """The fake on a loopback port; ``.parasut`` is its state and controls."""

    def __init__(self, **kwargs):
        self.parasut = FakeParasut(**kwargs)
        fake = self.parasut

        class Handler(KeepAliveHandler):
            def _serve(self, method: str, body: bytes) -> None:
                url = urllib.parse.urlsplit(self.path)
                reply = fake.handle(method, url.path, url.query, self.headers, body)
                if reply.after in ("timeout_before", "timeout_after"):
                    time.sleep(fake.hang_seconds)  # outside the lock; the client gives up first
                if reply.after == "reset":
                    # linger 0: closing sends RST, not FIN; the socket really closes once
                    # socketserver has closed its file objects
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                if reply.after is not None:
                    self.close_connection = True
                    return
                self._send(reply)

            def _send(self, reply: Reply) -> None:
                if reply.body is None:
                    data = b""
                elif isinstance(reply.body, bytes):
                    data = reply.body
                else:
                    data = _json(reply.body)
                self.send_response(reply.status)
                if reply.status != 204:  # a 204 has no body and must not announce one
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(data)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self._reply(data)

        super().__init__(Handler)
        fake.base_url = self.url
