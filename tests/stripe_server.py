"""A local HTTP server speaking the part of Stripe's API the sink uses, strictly.

It keeps customers, invoices (draft -> open -> paid / void), invoice items, customer balance
transactions and events; rejects unknown or malformed parameters (400 parameter_unknown /
parameter_invalid_*); honours idempotency keys as Stripe does (same key and parameters: the saved
response, replayed; same key, other parameters: 400 idempotency_error; validation errors are not
saved); refuses items on a finalized invoice and more than 250 items; applies the customer's
credit balance at finalization and marks a zero-due invoice paid; lists events newest first with
starting_after / ending_before; and can inject 429, 500, timeouts and connection resets, enforce
a rate limit, and forget idempotency keys (as Stripe does after 24 h).
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from loopback import KeepAliveHandler, LoopbackServer

META = "metadata"
CURRENCY = re.compile(r"^[a-z]{3}$")


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str, code: str | None = None, param: str | None = None,
                 save: bool = True):
        self.status, self.type, self.message, self.code, self.param, self.save = status, type_, message, code, param, save


def invalid(message: str, code: str, param: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request_error", message, code, param, save=False)


# Parameter specs: name -> kind; kinds: str, int, bool, currency, meta, list, dict spec, ("enum", ...)
ADDRESS = {"country": "str", "line1": "str", "line2": "str", "city": "str", "postal_code": "str", "state": "str"}
CUSTOMER = {"name": "str", "email": "str", "address": ADDRESS, "metadata": META, "description": "str"}
PAGE = {"limit": "int", "starting_after": "str", "ending_before": "str"}
CREDIT_NOTE_LINE = {"type": ("enum", "invoice_line_item", "custom_line_item"), "invoice_line_item": "str",
                    "amount": "int", "description": "str", "quantity": "int", "unit_amount": "int"}
CREDIT_NOTE = {"invoice": "str", "lines": [CREDIT_NOTE_LINE], "memo": "str", "metadata": META,
               "credit_amount": "int", "refund_amount": "int", "out_of_band_amount": "int",
               "reason": ("enum", "duplicate", "fraudulent", "order_change", "product_unsatisfactory")}
SPECS: dict[tuple[str, str], dict] = {
    ("POST", "/v1/customers"): CUSTOMER,
    ("POST", "/v1/customers/{id}"): CUSTOMER,
    ("GET", "/v1/customers/{id}"): {},
    ("GET", "/v1/customers/search"): {"query": "str", "limit": "int", "page": "str"},
    ("POST", "/v1/customers/{id}/balance_transactions"): {"amount": "int", "currency": "currency",
                                                          "description": "str", "metadata": META},
    ("GET", "/v1/customers/{id}/balance_transactions"): PAGE,
    ("POST", "/v1/invoices"): {
        "customer": "str", "currency": "currency", "auto_advance": "bool", "description": "str", "metadata": META,
        "collection_method": ("enum", "send_invoice", "charge_automatically"), "days_until_due": "int",
        "pending_invoice_items_behavior": ("enum", "exclude", "include"), "automatic_tax": {"enabled": "bool"}},
    ("GET", "/v1/invoices"): {**PAGE, "customer": "str", "status": "str"},
    ("GET", "/v1/invoices/{id}"): {},
    ("POST", "/v1/invoices/{id}/finalize"): {"auto_advance": "bool"},
    ("POST", "/v1/invoices/{id}/pay"): {"paid_out_of_band": "bool"},
    ("POST", "/v1/invoices/{id}/void"): {},
    ("POST", "/v1/invoiceitems"): {"customer": "str", "invoice": "str", "amount": "int", "currency": "currency",
                                   "description": "str", "metadata": META},
    ("GET", "/v1/invoiceitems"): {**PAGE, "invoice": "str", "customer": "str"},
    ("GET", "/v1/events"): {**PAGE, "types": "list", "type": "str"},
    ("GET", "/v1/invoices/{id}/lines"): PAGE,
    ("POST", "/v1/credit_notes"): CREDIT_NOTE,
    ("GET", "/v1/credit_notes/preview"): CREDIT_NOTE,
    ("GET", "/v1/credit_notes"): {**PAGE, "invoice": "str", "customer": "str"},
    ("GET", "/v1/credit_notes/{id}"): {},
}
REQUIRED = {
    ("POST", "/v1/invoices"): ["customer"],
    ("POST", "/v1/invoiceitems"): ["customer", "amount", "currency"],
    ("POST", "/v1/customers/{id}/balance_transactions"): ["amount", "currency"],
    ("GET", "/v1/customers/search"): ["query"],
    ("POST", "/v1/credit_notes"): ["invoice", "lines"],
    ("GET", "/v1/credit_notes/preview"): ["invoice", "lines"],
}


def parse_form(pairs: list[tuple[str, str]]) -> dict:
    """Stripe's form encoding: a[b]=1, a[]=x, a[0]=x into nested dicts and lists."""
    out: dict = {}
    for raw_key, value in pairs:
        m = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", raw_key)
        if not m:
            raise invalid(f"Invalid parameter name: {raw_key}", "parameter_invalid_nesting", raw_key)
        names = [m.group(1)] + re.findall(r"\[([^\[\]]*)\]", m.group(2))
        node = out
        for name in names[:-1]:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise invalid(f"Invalid nesting at {raw_key}", "parameter_invalid_nesting", raw_key)
        node[names[-1] or str(len(node))] = value
    return _lists(out)


def _lists(node):
    if isinstance(node, dict):
        if node and all(k.isdigit() for k in node):
            return [_lists(node[k]) for k in sorted(node, key=int)]
        return {k: _lists(v) for k, v in node.items()}
    return node


def validate(spec: dict, params: dict, prefix: str = "") -> None:
    for name, value in params.items():
        full = f"{prefix}[{name}]" if prefix else name
        kind = spec.get(name)
        if kind is None:
            raise invalid(f"Received unknown parameter: {full}", "parameter_unknown", full)
        if kind == META:
            if not isinstance(value, dict) or len(value) > 50 or any(len(k) > 40 or len(str(v)) > 500
                                                                    for k, v in value.items()):
                raise invalid(f"Invalid metadata: {full}", "parameter_invalid_metadata", full)
        elif isinstance(kind, dict):
            if not isinstance(value, dict):
                raise invalid(f"Invalid object: {full}", "parameter_invalid_object", full)
            validate(kind, value, full)
        elif kind == "int":
            if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value):
                raise invalid(f"Invalid integer: {value}", "parameter_invalid_integer", full)
        elif kind == "bool":
            if value not in ("true", "false"):
                raise invalid(f"Invalid boolean: {value}", "parameter_invalid_boolean", full)
        elif kind == "currency":
            if not isinstance(value, str) or not CURRENCY.match(value):
                raise invalid(f"Invalid currency: {value}", "parameter_invalid_string", full)
        elif isinstance(kind, list):  # a list of objects of one spec
            if not isinstance(value, list) or not value:
                raise invalid(f"Invalid array: {full}", "parameter_invalid_array", full)
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise invalid(f"Invalid object: {full}[{i}]", "parameter_invalid_object", f"{full}[{i}]")
                validate(kind[0], item, f"{full}[{i}]")
        elif kind == "list":
            if not isinstance(value, list):
                raise invalid(f"Invalid array: {full}", "parameter_invalid_array", full)
        elif isinstance(kind, tuple):
            if value not in kind[1:]:
                raise invalid(f"Invalid {full}: must be one of {', '.join(kind[1:])}", "parameter_invalid_string", full)
        elif not isinstance(value, str):
            raise invalid(f"Invalid string: {full}", "parameter_invalid_string", full)


@dataclass
class Fault:
    path: str  # a prefix of the request path, "" for any
    kind: str  # an HTTP status ("429", "500", "402"...), "timeout_before", "timeout_after" or "reset"
    method: str | None = None


@dataclass
class StripeState:
    customers: dict = field(default_factory=dict)
    invoices: dict = field(default_factory=dict)
    items: dict = field(default_factory=dict)
    balance_transactions: dict = field(default_factory=dict)  # customer id -> [tx]
    events: list = field(default_factory=list)  # oldest first
    credit_notes: dict = field(default_factory=dict)
    idempotency: dict = field(default_factory=dict)
    seq: int = 0


class FakeStripe:
    def __init__(self, rate_limit: float | None = None, latency: float = 0.0, tax_rates: dict | None = None,
                 hang_seconds: float = 3.0):
        self.state = StripeState()
        self.lock = threading.RLock()
        self.faults: list[Fault] = []
        self.rate_limit = rate_limit
        self._tokens = rate_limit or 0
        self._last = time.monotonic()
        self.latency = latency
        self.tax_rates = tax_rates or {}
        self.hang_seconds = hang_seconds
        self.requests: list[tuple[str, str]] = []
        self.rate_limited = 0
        self.stray_item_cents = 0  # someone adds an item in the Dashboard to every new draft

    # --- test controls ---
    def inject(self, path: str, *kinds: str, method: str | None = None) -> None:
        with self.lock:
            self.faults.extend(Fault(path, k, method) for k in kinds)

    def forget_idempotency_keys(self) -> None:
        with self.lock:
            self.state.idempotency.clear()

    def invoices_for(self, our_invoice_id: str) -> list[dict]:
        return [i for i in self.state.invoices.values() if i["metadata"].get("invoice_id") == our_invoice_id]

    def fail_payment(self, invoice_id: str) -> None:
        with self.lock:
            self._event("invoice.payment_failed", self.state.invoices[invoice_id])

    def writes(self) -> int:
        return sum(1 for m, _ in self.requests if m == "POST")

    # --- request handling ---
    def handle(self, method: str, path: str, params: dict, key: str | None, api_key: str | None):
        """-> (status, body dict, headers dict, after) where after is a fault to play after answering."""
        if self.latency:
            time.sleep(self.latency)
        with self.lock:
            self.requests.append((method, path))
            fault = self._take_fault(method, path)
            if not api_key:
                return 401, _error(ApiError(401, "invalid_request_error", "You did not provide an API key.")), {}, None
            if self.rate_limit and not self._take_token():
                self.rate_limited += 1
                return 429, _error(ApiError(429, "invalid_request_error", "Too many requests", "rate_limit")), {}, None
            if fault and fault.kind not in ("timeout_after",):
                if fault.kind.isdigit() and fault.kind not in ("429", "500"):
                    kind = "card_error" if fault.kind == "402" else "invalid_request_error"
                    error = ApiError(int(fault.kind), kind, f"Injected HTTP {fault.kind}", "injected")
                    return int(fault.kind), _error(error), {"Stripe-Should-Retry": "false"}, None
                if fault.kind == "429":
                    return 429, _error(ApiError(429, "invalid_request_error", "Too many requests", "rate_limit")), {}, None
                if fault.kind == "500":
                    return 500, _error(ApiError(500, "api_error", "Something went wrong")), {"Stripe-Should-Retry": "true"}, None
                return 0, {}, {}, fault
            try:
                route, ident, sub = _route(method, path)
                validate(SPECS[route], params)
                for name in REQUIRED.get(route, []):
                    if name not in params:
                        raise invalid(f"Missing required param: {name}.", "parameter_missing", name)
            except ApiError as exc:
                return exc.status, _error(exc), {}, fault
            except KeyError:
                return 404, _error(ApiError(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path}).")), {}, fault
            fingerprint = json.dumps([method, path, params], sort_keys=True)
            if method == "POST" and key:
                saved = self.state.idempotency.get(key)
                if saved:
                    if saved[0] != fingerprint:
                        return 400, _error(ApiError(400, "idempotency_error",
                                                    "Keys for idempotent requests can only be used with the same "
                                                    "parameters they were first used with.")), {}, fault
                    return saved[1], saved[2], {"Idempotent-Replayed": "true"}, fault
            try:
                status, body = 200, self._execute(route, ident, sub, params)
            except ApiError as exc:
                if not exc.save:
                    return exc.status, _error(exc), {}, fault
                status, body = exc.status, _error(exc)
            if method == "POST" and key:
                self.state.idempotency[key] = (fingerprint, status, body)
            return status, body, {}, fault

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for i, f in enumerate(self.faults):
            if path.startswith(f.path) and (f.method is None or f.method == method):
                return self.faults.pop(i)
        return None

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.rate_limit, self._tokens + (now - self._last) * self.rate_limit)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def _id(self, prefix: str) -> str:
        self.state.seq += 1
        return f"{prefix}_{self.state.seq:010d}"

    def _event(self, kind: str, invoice: dict) -> None:
        snapshot = {k: v for k, v in invoice.items() if k != "lines"}
        self.state.events.append({"id": self._id("evt"), "object": "event", "type": kind,
                                  "created": int(time.time()), "data": {"object": json.loads(json.dumps(snapshot))}})

    def _execute(self, route, ident, sub, p: dict) -> dict:
        s = self.state
        method, template = route
        if template == "/v1/customers":
            cus = {"id": self._id("cus"), "object": "customer", "balance": 0, "created": int(time.time()),
                   "name": p.get("name"), "email": p.get("email"), "address": p.get("address"),
                   "metadata": p.get("metadata", {})}
            s.customers[cus["id"]] = cus
            return cus
        if template == "/v1/customers/search":
            m = re.fullmatch(r"metadata\['([^']+)'\]:'((?:[^'\\]|\\.)*)'", p["query"])
            if not m:
                raise invalid("Unsupported query", "parameter_invalid_string", "query")
            value = re.sub(r"\\(.)", r"\1", m.group(2))
            data = [c for c in s.customers.values() if c["metadata"].get(m.group(1)) == value]
            return {"object": "search_result", "data": data, "has_more": False}
        if template.startswith("/v1/customers/{id}"):
            cus = s.customers.get(ident) or _missing("customer", ident)
            if template == "/v1/customers/{id}":
                if method == "POST":
                    for k in ("name", "email", "address"):
                        if k in p:
                            cus[k] = p[k]
                    cus["metadata"] = {**cus["metadata"], **p.get("metadata", {})}
                return cus
            txs = s.balance_transactions.setdefault(ident, [])
            if method == "GET":
                return _page(list(reversed(txs)), p)
            tx = {"id": self._id("cbtxn"), "object": "customer_balance_transaction", "customer": ident,
                  "amount": int(p["amount"]), "currency": p["currency"], "description": p.get("description"),
                  "metadata": p.get("metadata", {}), "type": "adjustment"}
            cus["balance"] += tx["amount"]
            txs.append(tx)
            return tx
        if template == "/v1/invoices" and method == "POST":
            if p["customer"] not in s.customers:
                _missing("customer", p["customer"])
            method_ = p.get("collection_method", "charge_automatically")
            if method_ == "send_invoice" and "days_until_due" not in p:
                raise invalid("days_until_due is required for send_invoice", "parameter_missing", "days_until_due")
            inv = {"id": self._id("in"), "object": "invoice", "customer": p["customer"], "status": "draft",
                   "currency": p.get("currency", "usd"), "collection_method": method_,
                   "days_until_due": int(p["days_until_due"]) if "days_until_due" in p else None,
                   "auto_advance": p.get("auto_advance") == "true", "description": p.get("description"),
                   "metadata": p.get("metadata", {}), "number": None, "hosted_invoice_url": None,
                   "invoice_pdf": None, "created": int(time.time()),
                   "automatic_tax": {"enabled": p.get("automatic_tax", {}).get("enabled") == "true"},
                   "starting_balance": 0, "ending_balance": None, "amount_paid": 0}
            s.invoices[inv["id"]] = inv
            if self.stray_item_cents:
                stray = {"id": self._id("ii"), "object": "invoiceitem", "customer": inv["customer"],
                         "invoice": inv["id"], "amount": self.stray_item_cents, "currency": inv["currency"],
                         "description": "Added by hand in the Dashboard", "metadata": {}}
                s.items[stray["id"]] = stray
            self._totals(inv)
            return inv
        if template == "/v1/invoices":
            data = [i for i in reversed(list(s.invoices.values()))
                    if (not p.get("customer") or i["customer"] == p["customer"])
                    and (not p.get("status") or i["status"] == p["status"])]
            return _page([self._totals(i) for i in data], p)
        if template == "/v1/invoices/{id}/lines":
            inv = s.invoices.get(ident) or _missing("invoice", ident)
            return _page([_line(i) for i in self._totals(inv)["lines"]["data"]], p)
        if template.startswith("/v1/credit_notes"):
            return self._credit_notes(template, method, ident, p)
        if template.startswith("/v1/invoices/{id}"):
            inv = s.invoices.get(ident) or _missing("invoice", ident)
            if sub == "finalize":
                if inv["status"] != "draft":
                    raise ApiError(400, "invalid_request_error", "This invoice is already finalized, you can't "
                                   "re-finalize a non-draft invoice.", "invoice_not_editable")
                self._finalize(inv)
            elif sub == "pay":
                if inv["status"] != "open":
                    raise ApiError(400, "invalid_request_error", f"Invoice is {inv['status']}, not open.",
                                   "invoice_unexpected_state")
                inv.update(status="paid", amount_paid=inv["amount_due"], amount_remaining=0)
                self._event("invoice.paid", inv)
            elif sub == "void":
                if inv["status"] != "open":
                    raise ApiError(400, "invalid_request_error", "Only open invoices can be voided.",
                                   "invoice_unexpected_state")
                inv["status"] = "void"
                applied = inv["starting_balance"] - inv["ending_balance"]
                s.customers[inv["customer"]]["balance"] += applied  # Stripe returns applied credit
                self._event("invoice.voided", inv)
            return self._totals(inv)
        if template == "/v1/invoiceitems" and method == "POST":
            inv = s.invoices.get(p.get("invoice")) if p.get("invoice") else None
            if p.get("invoice") and inv is None:
                _missing("invoice", p["invoice"])
            if inv is not None:
                if inv["status"] != "draft":
                    raise ApiError(400, "invalid_request_error", "You can only add invoice items to draft invoices.",
                                   "invoice_not_editable", "invoice")
                if inv["currency"] != p["currency"]:
                    raise invalid("The currency of the invoice item must match the invoice.", "parameter_invalid",
                                  "currency")
                if inv["automatic_tax"]["enabled"] and int(p["amount"]) < 0:  # as documented for automatic_tax
                    raise invalid("Invoice items with negative amounts cannot be added to invoices with automatic "
                                  "tax enabled.", "parameter_invalid", "amount")
                if sum(1 for i in s.items.values() if i["invoice"] == inv["id"]) >= 250:
                    raise invalid("An invoice can have at most 250 invoice items.", "invoice_too_many_items")
            item = {"id": self._id("ii"), "object": "invoiceitem", "customer": p["customer"],
                    "invoice": p.get("invoice"), "amount": int(p["amount"]), "currency": p["currency"],
                    "description": p.get("description"), "metadata": p.get("metadata", {})}
            s.items[item["id"]] = item
            return item
        if template == "/v1/invoiceitems":
            data = [i for i in reversed(list(s.items.values()))
                    if (not p.get("invoice") or i["invoice"] == p["invoice"])
                    and (not p.get("customer") or i["customer"] == p["customer"])]
            return _page(data, p)
        if template == "/v1/events":
            types = set(p.get("types") or ([p["type"]] if p.get("type") else []))
            data = [e for e in reversed(s.events) if not types or e["type"] in types]
            return _page(data, p)
        raise AssertionError(template)

    def _credit_notes(self, template: str, method: str, ident, p: dict) -> dict:
        s = self.state
        if template == "/v1/credit_notes/{id}":
            return s.credit_notes.get(ident) or _missing("credit note", ident)
        if template == "/v1/credit_notes":
            if method == "GET":
                data = [c for c in reversed(list(s.credit_notes.values()))
                        if (not p.get("invoice") or c["invoice"] == p["invoice"])
                        and (not p.get("customer") or c["customer"] == p["customer"])]
                return _page(data, p)
        inv = s.invoices.get(p["invoice"]) or _missing("invoice", p["invoice"])
        if inv["status"] not in ("open", "paid"):
            raise ApiError(400, "invalid_request_error", f"Credit notes can only be issued on open or paid "
                           f"invoices; this one is {inv['status']}.", "invoice_not_editable", save=False)
        items = {_line(i)["id"]: i for i in inv["lines"]["data"]}
        earlier = [c for c in s.credit_notes.values() if c["invoice"] == inv["id"]]
        country = (s.customers[inv["customer"]].get("address") or {}).get("country")
        rate = self.tax_rates.get(country, 0) if inv["automatic_tax"]["enabled"] else 0
        lines = []
        for i, line in enumerate(p["lines"]):
            where = f"lines[{i}]"
            if line["type"] == "invoice_line_item":
                item = items.get(line.get("invoice_line_item")) or self._refuse(f"{where}[invoice_line_item]: no such "
                                                                                "line on this invoice")
                amount = int(line.get("amount") or self._refuse(f"{where}[amount] is required"))
                credited = sum(x["amount"] for c in earlier for x in c["lines"]["data"]
                               if x.get("invoice_line_item") == line["invoice_line_item"])
                if not 0 < amount <= item["amount"] - credited:
                    self._refuse(f"{where}[amount]: {amount} exceeds what is left to credit on the line "
                                 f"({item['amount'] - credited})")
                description = item["description"]
            else:
                amount = int(line.get("unit_amount") or self._refuse(f"{where}[unit_amount] is required")) * int(
                    line.get("quantity", "1"))
                description = line.get("description") or self._refuse(f"{where}[description] is required")
                if amount <= 0:
                    self._refuse(f"{where}: the amount must be positive")
            tax = int((amount * rate * 2 + 1) // 2) if rate else 0
            lines.append({"id": self._id("cnli") if method == "POST" else "preview", "object": "credit_note_line_item",
                          "type": line["type"], "invoice_line_item": line.get("invoice_line_item"), "amount": amount,
                          "description": description, "tax": tax})
        subtotal = sum(x["amount"] for x in lines)
        total = subtotal + sum(x["tax"] for x in lines)
        if total + sum(c["total"] for c in earlier) > inv["total"]:
            self._refuse(f"The credit note total {total} exceeds what is left to credit on the invoice "
                         f"({inv['total'] - sum(c['total'] for c in earlier)}).")
        pre = min(total, inv["amount_remaining"])
        post = total - pre
        given = sum(int(p.get(k, "0")) for k in ("credit_amount", "refund_amount", "out_of_band_amount"))
        if given != post:
            self._refuse(f"The sum of credit_amount, refund_amount and out_of_band_amount ({given}) must equal the "
                         f"post-payment amount of the credit note ({post}).")
        note = {"id": self._id("cn") if method == "POST" else "preview", "object": "credit_note",
                "invoice": inv["id"], "customer": inv["customer"], "currency": inv["currency"], "status": "issued",
                "number": f"{inv['number']}-CN-{len(earlier) + 1:02d}", "subtotal": subtotal, "total": total,
                "amount": total, "pre_payment_amount": pre, "post_payment_amount": post,
                "credit_amount": int(p.get("credit_amount", "0")), "memo": p.get("memo"),
                "metadata": p.get("metadata", {}), "pdf": None, "created": int(time.time()),
                "lines": {"object": "list", "data": lines, "has_more": False}}
        if method == "GET":
            return note
        note["pdf"] = f"https://pay.stripe.test/{note['id']}/pdf"
        s.credit_notes[note["id"]] = note
        inv["amount_remaining"] -= pre
        inv["amount_due"] -= pre
        s.customers[inv["customer"]]["balance"] -= note["credit_amount"]
        return note

    @staticmethod
    def _refuse(message: str):
        raise ApiError(400, "invalid_request_error", message, "parameter_invalid", save=False)

    def _totals(self, inv: dict) -> dict:
        if inv["status"] == "draft":
            items = [i for i in self.state.items.values() if i["invoice"] == inv["id"]]
            subtotal = sum(i["amount"] for i in items)
            country = ((self.state.customers[inv["customer"]].get("address") or {}).get("country"))
            rate = self.tax_rates.get(country, 0) if inv["automatic_tax"]["enabled"] else 0
            tax = int((subtotal * rate * 2 + 1) // 2) if rate else 0  # half-up on minor units
            inv.update(subtotal=subtotal, tax=tax, total=subtotal + tax, amount_due=subtotal + tax,
                       amount_remaining=subtotal + tax,
                       lines={"object": "list", "data": items, "has_more": False, "total_count": len(items)})
        return inv

    def _finalize(self, inv: dict) -> None:
        self._totals(inv)
        customer = self.state.customers[inv["customer"]]
        credit = max(0, -customer["balance"])
        applied = min(credit, inv["total"])
        inv["starting_balance"] = customer["balance"]
        customer["balance"] += applied
        inv["ending_balance"] = customer["balance"]
        number = sum(1 for i in self.state.invoices.values() if i["number"]) + 1
        inv.update(status="open", number=f"RPC-{number:04d}", amount_due=inv["total"] - applied,
                   amount_remaining=inv["total"] - applied,
                   hosted_invoice_url=f"https://invoice.stripe.test/{inv['id']}",
                   invoice_pdf=f"https://pay.stripe.test/{inv['id']}/pdf")
        self._event("invoice.finalized", inv)
        if inv["amount_due"] == 0:  # Stripe marks an invoice with nothing due paid at once
            inv["status"] = "paid"
            self._event("invoice.paid", inv)


def _line(item: dict) -> dict:
    """The invoice line item Stripe makes of an invoice item (its metadata travels with it)."""
    return {"id": "il_" + item["id"].split("_", 1)[1], "object": "line_item", "invoice_item": item["id"],
            "amount": item["amount"], "currency": item["currency"], "description": item["description"],
            "metadata": item["metadata"]}


def _missing(kind: str, ident) -> dict:
    raise ApiError(404, "invalid_request_error", f"No such {kind}: '{ident}'", "resource_missing", save=False)


def _page(data: list[dict], p: dict) -> dict:
    limit = int(p.get("limit", 10))
    if not 1 <= limit <= 100:
        raise invalid("limit must be between 1 and 100", "parameter_invalid_integer", "limit")
    ids = [d["id"] for d in data]
    if p.get("starting_after"):
        start = ids.index(p["starting_after"]) + 1 if p["starting_after"] in ids else len(ids)
        chunk = data[start:start + limit]
        has_more = start + limit < len(data)
    elif p.get("ending_before"):
        end = ids.index(p["ending_before"]) if p["ending_before"] in ids else 0
        chunk = data[max(0, end - limit):end]
        has_more = end - limit > 0
    else:
        chunk, has_more = data[:limit], len(data) > limit
    return {"object": "list", "data": chunk, "has_more": has_more, "url": ""}


def _error(exc: ApiError) -> dict:
    error = {"type": exc.type, "message": exc.message}
    if exc.code:
        error["code"] = exc.code
    if exc.param:
        error["param"] = exc.param
    return {"error": error}


_ROUTES = [
    (re.compile(r"^/v1/customers$"), "/v1/customers"),
    (re.compile(r"^/v1/customers/search$"), "/v1/customers/search"),
    (re.compile(r"^/v1/customers/([^/]+)$"), "/v1/customers/{id}"),
    (re.compile(r"^/v1/customers/([^/]+)/balance_transactions$"), "/v1/customers/{id}/balance_transactions"),
    (re.compile(r"^/v1/invoices$"), "/v1/invoices"),
    (re.compile(r"^/v1/invoices/([^/]+)$"), "/v1/invoices/{id}"),
    (re.compile(r"^/v1/invoices/([^/]+)/(finalize|pay|void)$"), None),
    (re.compile(r"^/v1/invoices/([^/]+)/lines$"), "/v1/invoices/{id}/lines"),
    (re.compile(r"^/v1/credit_notes$"), "/v1/credit_notes"),
    (re.compile(r"^/v1/credit_notes/preview$"), "/v1/credit_notes/preview"),
    (re.compile(r"^/v1/credit_notes/([^/]+)$"), "/v1/credit_notes/{id}"),
    (re.compile(r"^/v1/invoiceitems$"), "/v1/invoiceitems"),
    (re.compile(r"^/v1/events$"), "/v1/events"),
]


def _route(method: str, path: str):
    for pattern, template in _ROUTES:
        m = pattern.match(path)
        if m:
            groups = m.groups()
            if template is None:
                template = f"/v1/invoices/{{id}}/{groups[1]}"
            route = (method, template)
            if route not in SPECS:
                raise KeyError(route)
            return route, groups[0] if groups else None, groups[1] if len(groups) > 1 else None
    raise KeyError(path)


class StripeServer(LoopbackServer):
    """The fake on a loopback port; ``.stripe`` is its state and controls."""

    def __init__(self, **kwargs):
        self.stripe = FakeStripe(**kwargs)
        fake = self.stripe

        class Handler(KeepAliveHandler):
            def _serve(self, method: str, body: bytes) -> None:
                url = urllib.parse.urlsplit(self.path)
                pairs = urllib.parse.parse_qsl(body.decode() if method == "POST" else url.query, keep_blank_values=True)
                try:
                    params = parse_form(pairs)
                except ApiError as exc:
                    return self._send(exc.status, _error(exc), {})
                auth = self.headers.get("Authorization", "")
                status, payload, headers, after = fake.handle(method, url.path, params,
                                                              self.headers.get("Idempotency-Key"),
                                                              auth.removeprefix("Bearer ") or None)
                if after is not None and after.kind in ("timeout_before", "timeout_after"):
                    time.sleep(fake.hang_seconds)  # the client gives up first
                if after is not None:
                    self.close_connection = True
                    return
                self._send(status, payload, headers)

            def _send(self, status: int, payload: dict, headers: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", f"req_{time.monotonic_ns()}")
                for k, v in headers.items():
                    self.send_header(k, v)
                self._reply(data)

        super().__init__(Handler)
