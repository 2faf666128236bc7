"""Bad input the product refuses, one case per kind, each with a message naming the file and
field, the contract, the bulletin or the payload's problem: catalog files (corpus in
tests/bad_input/catalog/), contracts written to PostgreSQL, TCMB bulletins served by the local FX
server, signed Stripe webhook payloads. Nothing crashes, nothing bad is used, and a check turns red
where one watches the input. (Bad raw usage rows: test_bad_input.py.)"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import date
from pathlib import Path

import dagster as dg
import httpx
import psycopg
import pytest

from billing_pipeline.domain.chains import load_chains
from billing_pipeline.domain.meters import load_compute_units, load_meters
from billing_pipeline.domain.periods import Period
from billing_pipeline.domain.plans import load_plans
from billing_pipeline.errors import BillingError
from billing_pipeline.resources.fx import FxSourcesResource
from billing_pipeline.sinks.stripe.webhook import handler_for
from billing_pipeline.steps.rating import load_terms
from billing_pipeline.stores.postgres import transaction
from fx_server import FxServer, tcmb_xml
from loopback import LoopbackServer
from month_fixture import seed_contracts
from product_defs import product_defs

CORPUS = Path(__file__).parent / "bad_input"


METERS = {m.slug for m in load_meters()}
CATALOG_KINDS = {
    "plans_broken_yaml": "plans_broken_yaml.yaml: not valid YAML at line 10, column 109: expected ',' or ']', but got "
                         "'}' (while parsing a flow sequence from line 10)",
    "plans_missing_currency": "plans_missing_currency.yaml: plan 'pro_x', currency: Field required",
    "plans_negative_price": "plans_negative_price.yaml: plan 'pro_x', charges.0.price.tiers.1.unit_price: a price "
                            "cannot be negative",
    # 0.123456789012345678 unquoted: YAML has already turned it into another number
    "plans_float_price": "plans_float_price.yaml: plan 'pro_x', charges.0.price.unit_price: 0.12345678901234568 is "
                         "read as a float, which may not hold every digit written; quote the number as written "
                         "(e.g. \"0.00005\")",
    "plans_unknown_price_model": "plans_unknown_price_model.yaml: plan 'pro_x', charges.0.price: Input tag 'tiered' "
                                 "found using 'type' does not match any of the expected tags: 'per_unit', "
                                 "'graduated', 'volume', 'package'",
    "plans_duplicate_key": "plans_duplicate_key.yaml: not valid YAML at line 11, column 5: key 'currency' is given "
                           "twice (first on line 6)",
    "plans_latin1": "plans_latin1.yaml: not UTF-8 text: byte 0xfe on line 4 (save the file as UTF-8)",
    "meters_missing_event_type": "meters_missing_event_type.yaml: meter 'requests', eventType: Field required",
    "meters_empty": "meters_empty.yaml: expected a mapping of keys at the top level, got nothing (the file is empty)",
    "compute_units_negative_weight": "compute_units_negative_weight.yaml: methods: method 'eth_getLogs': weight -75 is "
                                     "negative",
    "chains_tab_indented": "chains_tab_indented.yaml: not valid YAML at line 3, column 1: found character '\\t' that "
                           "cannot start any token",
}
LOADERS = {"plans": lambda path: load_plans(path, known_meters=METERS), "meters": load_meters,
           "compute": load_compute_units, "chains": load_chains}


@pytest.mark.parametrize("name, message", CATALOG_KINDS.items(), ids=CATALOG_KINDS.keys())
def test_a_bad_catalog_file_is_refused_naming_file_and_field(name, message):
    with pytest.raises(BillingError) as err:
        LOADERS[name.split("_")[0]](CORPUS / "catalog" / f"{name}.yaml")
    assert str(err.value) == message


def _contract(conn, **changes) -> None:
    values = {"contract_id": "CTR-BAD", "org_id": "org_n", "plan_id": "pro_test", "contract_type": "METERED",
              "currency": "USD", "region": "GLOBAL", "start_at": "2026-10-01T00:00:00Z", "end_at": None, **changes}
    conn.execute("INSERT INTO customers (org_id, legal_name, country) VALUES ('org_n', 'New Ltd', 'US')")
    conn.execute(f"INSERT INTO contracts ({', '.join(values)}) VALUES ({', '.join(['%s'] * len(values))})",
                 list(values.values()))


CONTRACT_KINDS = {
    "unknown_plan": ({"plan_id": "platinum"}, "contract CTR-BAD names unknown plan 'platinum'"),
    "end_before_start": ({"end_at": "2026-09-01T00:00:00Z"},
                         "contract CTR-BAD: end_at 2026-09-01T00:00:00Z is not after start_at 2026-10-01T00:00:00Z"),
    "malformed_currency": ({"currency": "usd"},
                           "contract CTR-BAD: currency 'usd' is not an ISO 4217 code (three capital letters)"),
    "unknown_timezone": ({"timezone": "Mars/Olympus_Mons"},
                         "contract CTR-BAD: timezone 'Mars/Olympus_Mons' is not an IANA time zone name "
                         "(e.g. Europe/Istanbul)"),
    "posix_timezone": ({"timezone": "UTC+3"},
                       "contract CTR-BAD: timezone 'UTC+3' is not an IANA time zone name (e.g. Europe/Istanbul)"),
}


@pytest.mark.parametrize("changes, message", CONTRACT_KINDS.values(), ids=CONTRACT_KINDS.keys())
def test_a_bad_contract_is_refused_when_written_naming_it(db_url, changes, message):
    with transaction(db_url) as conn:
        seed_contracts(conn)
    with pytest.raises(psycopg.Error) as err, transaction(db_url) as conn:
        _contract(conn, **changes)
    assert err.value.diag.message_primary == message
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM contracts WHERE contract_id = 'CTR-BAD'").fetchone() == (0,)


def test_a_contract_in_an_unknown_currency_is_refused_by_rating_naming_it(db_url):
    with transaction(db_url) as conn:
        seed_contracts(conn)
        _contract(conn, currency="XXX")
    with pytest.raises(BillingError) as err, psycopg.connect(db_url) as conn:
        load_terms(conn, Period.parse_month("2026-10"))
    assert str(err.value) == ("contract CTR-BAD: currency 'XXX' has no ISO 4217 minor unit configured; known: "
                              "['BHD', 'CHF', 'EUR', 'GBP', 'JPY', 'KRW', 'KWD', 'TRY', 'USD']")


OCT_30 = date(2026, 10, 30)
BULLETIN = tcmb_xml(OCT_30, {"USD": (1, "34.5678")})  # as TCMB publishes it: ISO-8859-9
FX_KINDS = {
    "truncated_xml": (BULLETIN[:200],
                      "TCMB bulletin 2026-10-30 is not well-formed XML: unclosed token: line 4, column 0"),
    "empty_document": (b"", "TCMB bulletin 2026-10-30 is not well-formed XML: no element found: line 1, column 0"),
    "html_instead_of_xml": (b"<html><body>Bakim calismasi</body></html>",
                            "TCMB bulletin 2026-10-30: root element is <html>, expected <Tarih_Date>"),
    "declared_utf8_sent_latin5": (BULLETIN.replace(b'encoding="ISO-8859-9"', b'encoding="UTF-8"'),
                                  "TCMB bulletin 2026-10-30 is not well-formed XML: not well-formed (invalid token): "
                                  "line 5, column 74"),
    "unknown_declared_encoding": (BULLETIN.replace(b'encoding="ISO-8859-9"', b'encoding="KOI-42"'),
                                  "TCMB bulletin 2026-10-30 cannot be decoded: unknown encoding: KOI-42"),
    "empty_rate_element": (tcmb_xml(OCT_30, {"USD": (1, "")}), "TCMB bulletin 2026-10-30 has no ForexBuying for USD"),
    "zero_rate": (tcmb_xml(OCT_30, {"USD": (1, "0.0000")}),
                  "TCMB bulletin 2026-10-30: USD ForexBuying: 0.0000 is not a positive rate"),
    "negative_rate": (tcmb_xml(OCT_30, {"USD": (1, "-34.5678")}),
                      "TCMB bulletin 2026-10-30: USD ForexBuying: -34.5678 is not a positive rate"),
    "nan_rate": (tcmb_xml(OCT_30, {"USD": (1, "NaN")}),
                 "TCMB bulletin 2026-10-30: USD ForexBuying: 'NaN' is not a number"),
    "absurd_rate": (tcmb_xml(OCT_30, {"USD": (1, "3.4e12")}),
                    "TCMB bulletin 2026-10-30: USD ForexBuying: 3.4E+12 is out of range "
                    "(a rate is below 1,000,000,000)"),
}


@pytest.mark.parametrize("body, reason", FX_KINDS.values(), ids=FX_KINDS.keys())
def test_a_bad_bulletin_is_never_used_and_turns_fx_rates_present_red(october, chdb_path, instance, body, reason):
    with psycopg.connect(october, autocommit=True) as conn:  # CTR-A: a Turkish customer rated in dollars
        conn.execute("UPDATE contracts SET region = 'TR' WHERE contract_id = 'CTR-A'")
    with FxServer() as fx:
        fx.files["/kurlar/202610/30102026.xml"] = body
        defs = product_defs(october, chdb_path, fx_sources=FxSourcesResource(tcmb_base_url=fx.tcmb_base,
                                                                             ecb_base_url=fx.ecb_base))
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("fx_snapshot")], partition_key="2026-10-01")
    assert result.success  # the asset records the failure; it does not crash
    key = dg.AssetCheckKey(dg.AssetKey("fx_snapshot"), "fx_rates_present")
    evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key] \
        .event.dagster_event.event_specific_data
    assert (evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}) == (
        False, {"failed": 1, "reasons": f"USD: {reason}"})
    with psycopg.connect(october) as conn:
        assert conn.execute("SELECT currency, status, rate, failure FROM fx_snapshots").fetchall() == [
            ("USD", "FAILED", None, reason)]


SECRET = "whsec_bad_input"


def _signed(body: bytes) -> str:
    at = int(time.time())
    return f"t={at},v1={hmac.new(SECRET.encode(), f'{at}.'.encode() + body, hashlib.sha256).hexdigest()}"


EVENT = {"id": "evt_1", "type": "invoice.paid", "created": 1_790_000_000, "data": {"object": {"id": "in_1"}}}
WEBHOOK_KINDS = {
    "truncated_json": (b'{"id": "evt_1", "type": "invoice.paid",',
                       "payload is not JSON: Expecting property name enclosed in double quotes: line 1 column 40 "
                       "(char 39)"),
    "not_utf8": (b'{"id": "evt_\xff"}', "payload is not UTF-8: byte 0xff at offset 12"),
    "json_array": (b'[{"id": "evt_1"}]', "payload is not a Stripe event: a JSON list, not an object"),
    "created_not_a_number": (json.dumps({**EVENT, "created": "yesterday"}).encode(),
                             "payload is not a Stripe event: created is missing or not an integer"),
    "no_data_object": (json.dumps({**EVENT, "data": {}}).encode(),
                       "payload is not a Stripe event: data.object is missing or not an object"),
}


@pytest.mark.parametrize("body, error", WEBHOOK_KINDS.values(), ids=WEBHOOK_KINDS.keys())
def test_a_bad_signed_webhook_payload_is_answered_400_naming_the_problem(db_url, body, error):
    with LoopbackServer(handler_for(db_url, SECRET)) as hook:
        answer = httpx.post(hook.url, content=body, headers={"Stripe-Signature": _signed(body)})
        # the endpoint is still up and applies a well-formed event afterwards
        good = json.dumps(EVENT).encode()
        after = httpx.post(hook.url, content=good, headers={"Stripe-Signature": _signed(good)})
    assert (answer.status_code, answer.json()) == (400, {"error": error})
    assert (after.status_code, after.json()) == (200, {"received": True, "outcome": "ignored: not one of our invoices"})
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT event_id, outcome FROM stripe_events").fetchall() == [
            ("evt_1", "ignored: not one of our invoices")]
