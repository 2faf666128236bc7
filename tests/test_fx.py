"""TCMB bulletins and the ECB cross-check: parsing, the bulletin an invoice uses, fallbacks, and a
Turkish invoice converted to lira line by line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from decimal import Decimal

import dagster as dg
import psycopg
import pytest

from billing_pipeline.close import close_month
from billing_pipeline.domain.fx import FxDocumentError, bulletin_days_before, parse_ecb, parse_tcmb
from billing_pipeline.domain.periods import Period
from billing_pipeline.resources.fx import FxSourcesResource
from billing_pipeline.steps.fx import FxSources, resolve
from fx_server import FxServer, tcmb_xml
from product_defs import product_defs

LIMIT = Decimal("0.02")
OCT_30, OCT_28, NOV_1 = date(2026, 10, 30), date(2026, 10, 28), date(2026, 11, 1)


def test_a_real_shaped_bulletin_parses_per_unit_with_its_declared_encoding():
    data = tcmb_xml(OCT_30, {"USD": (1, "34.5678"), "JPY": (100, "22.4410"), "CHF": (1, "38.9012")})
    assert "İSVİÇRE".encode("iso-8859-9") in data  # really ISO-8859-9, not UTF-8
    bulletin = parse_tcmb(data, expected_date=OCT_30)
    assert bulletin.rates == {"USD": Decimal("34.5678"), "JPY": Decimal("0.2244100000"), "CHF": Decimal("38.9012")}
    assert bulletin.units["JPY"] == 100 and "XDR" not in bulletin.rates  # empty ForexBuying: no quote, not zero


@pytest.mark.parametrize("data,message", [
    (tcmb_xml(OCT_30, {"USD": (1, "34.5678")}, dated=OCT_28), "fetched for 2026-10-30 is dated 2026-10-28"),
    (b"<Tarih_Date Tarih='30.10.2026'><Currency", "not well-formed XML"),
    (tcmb_xml(OCT_30, {"USD": (1, "34,5678")}), "USD ForexBuying: '34,5678' is not a number"),
    (tcmb_xml(OCT_30, {"USD": (0, "34.5678")}), "USD Unit '0' is not a positive integer"),
    (tcmb_xml(OCT_30, {"USD": (1, "-1")}), "-1 is not a positive rate"),
])
def test_a_bad_bulletin_is_refused_with_the_reason(data, message):
    with pytest.raises(FxDocumentError, match=message):
        parse_tcmb(data, expected_date=OCT_30)


def test_the_bulletin_is_the_last_business_day_before_the_issue_date():
    assert bulletin_days_before(NOV_1)[:3] == [OCT_30, date(2026, 10, 29), OCT_28]  # Sunday -> Friday first
    assert bulletin_days_before(date(2026, 11, 2))[0] == OCT_30  # Monday -> Friday, never the day itself


@pytest.fixture
def fx():
    with FxServer() as server:
        server.publish_tcmb(OCT_28, {"USD": (1, "34.1000"), "EUR": (1, "36.9000")})
        server.publish_tcmb(OCT_30, {"USD": (1, "34.5678"), "EUR": (1, "37.4321")})
        server.publish_ecb({OCT_30: {"USD": "1.0850", "TRY": "37.6200"}, OCT_28: {"USD": "1.0800", "TRY": "37.0000"}})
        yield server


def sources(server) -> FxSources:
    return FxSources(server.tcmb_base, server.ecb_base, attempts=2, base_delay=0.01, timeout=2)


def test_the_rate_steps_over_a_holiday_and_is_cross_checked(fx):
    # 29 October (Republic Day) has no bulletin: an invoice issued on the 30th uses the 28th's
    result = resolve(sources(fx), {"USD"}, OCT_30, LIMIT)
    s = result.outcomes[0].snapshot
    assert (s.rate, s.bulletin_date, s.source, s.estimated) == (Decimal("34.1000"), OCT_28, "TCMB", False)
    assert fx.requests[:2] == ["/kurlar/202610/29102026.xml", "/kurlar/202610/28102026.xml"]
    assert s.cross_check.ecb_rate == Decimal("34.2592592593")  # 37.0000 / 1.0800
    assert s.cross_check.divergence == Decimal("0.004649") and not s.cross_check.flagged


def test_a_divergence_beyond_the_limit_is_flagged_not_replaced(fx):
    fx.publish_ecb({OCT_30: {"USD": "1.0850", "TRY": "40.0000"}})
    s = resolve(sources(fx), {"USD"}, NOV_1, LIMIT).outcomes[0].snapshot
    assert s.rate == Decimal("34.5678") and s.cross_check.flagged and s.cross_check.divergence == Decimal("0.062348")


def test_no_source_answering_reuses_the_last_known_rate_marked_estimated(fx):
    from billing_pipeline.domain.fx import FxSnapshot

    fx.down.add("/")
    none_known = resolve(sources(fx), {"USD"}, NOV_1, LIMIT).outcomes[0]
    assert none_known.snapshot is None
    assert none_known.failure.startswith("TCMB did not answer (TCMB http://") and "HTTP 503" in none_known.failure
    assert none_known.failure.endswith("no earlier USD rate is known")

    september = FxSnapshot("USD", Decimal("33.9000"), "TCMB", date(2026, 9, 30), date(2026, 10, 1), "ab" * 32, False)
    s = resolve(sources(fx), {"USD"}, NOV_1, LIMIT, lambda c, before: september).outcomes[0].snapshot
    assert (s.rate, s.source, s.bulletin_date, s.estimated) == (Decimal("33.9000"), "TCMB_LAST_KNOWN",
                                                                date(2026, 9, 30), True)


def test_a_wrongly_dated_file_fails_the_currency_and_is_not_stepped_over(fx):
    fx.publish_tcmb(OCT_30, {"USD": (1, "34.5678")}, dated=OCT_28)
    outcome = resolve(sources(fx), {"USD"}, NOV_1, LIMIT).outcomes[0]
    assert outcome.snapshot is None
    assert outcome.failure == "TCMB bulletin fetched for 2026-10-30 is dated 2026-10-28"


def test_the_ecb_file_parses_every_day():
    days = parse_ecb(tcmb_free_ecb())
    assert [d.rate_date for d in days] == [OCT_30, OCT_28]
    assert days[0].try_per("EUR") == Decimal("37.6200") and days[0].try_per("USD") == Decimal("34.6728110599")


def tcmb_free_ecb() -> bytes:
    from fx_server import ecb_xml
    return ecb_xml({OCT_30: {"USD": "1.0850", "TRY": "37.6200"}, OCT_28: {"USD": "1.0800", "TRY": "37.0000"}})


def test_billing_fx_rate_prints_the_rate_an_invoice_would_use(fx, tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BILLING_")},
           "BILLING_STATE_DIR": str(tmp_path), "BILLING_TCMB_BASE_URL": fx.tcmb_base,
           "BILLING_ECB_BASE_URL": fx.ecb_base}
    out = subprocess.run([sys.executable, "-m", "billing_pipeline.cli", "fx", "rate", "--currency", "usd",
                          "--date", "2026-11-01"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert {k: answer[k] for k in ("currency", "rate", "bulletin_date", "source", "estimated", "issue_date")} == {
        "currency": "USD", "rate": "34.5678000000", "bulletin_date": "2026-10-30", "source": "TCMB",
        "estimated": False, "issue_date": "2026-11-01"}
    assert answer["raw_sha256"] == __import__("hashlib").sha256(fx.files["/kurlar/202610/30102026.xml"]).hexdigest()


@pytest.mark.parametrize("vat_rate,vat,tax,total", [(None, ("0.3500", "0.7600"), "1.1100", "6.6400"),
                                                    ("0.10", ("0.1700", "0.3800"), "0.5500", "6.0800")],
                         ids=["KDV 20% (default)", "KDV 10% (the contract's)"])
def test_a_turkish_contract_rated_in_dollars_is_invoiced_in_lira_line_by_line(october, chdb_path, instance, fx,
                                                                             vat_rate, vat, tax, total):
    with psycopg.connect(october, autocommit=True) as conn:
        conn.execute("UPDATE contracts SET region = 'TR', vat_rate = %s WHERE contract_id = 'CTR-A'", (vat_rate,))
    defs = product_defs(october, chdb_path, fx_sources=FxSourcesResource(tcmb_base_url=fx.tcmb_base,
                                                                         ecb_base_url=fx.ecb_base))
    close_month(instance, Period.parse_month("2026-10"), definitions=defs)
    with psycopg.connect(october) as conn:
        invoice = conn.execute(
            """SELECT currency, source_currency, fx_rate::text, fx_snapshot_ref, fx_estimated, issue_date, subtotal::text,
                      tax::text, total::text FROM invoices WHERE invoice_id = 'CTR-A:2026-10:v1'""").fetchone()
        lines = conn.execute("""SELECT source_amount::text, source_currency, amount::text, vat_amount::text, currency
                                FROM invoice_lines WHERE invoice_id = 'CTR-A:2026-10:v1' ORDER BY line_no""").fetchall()
        snapshot = conn.execute("SELECT status, rate::text, bulletin_date, raw_sha256, divergence_flagged "
                                "FROM fx_snapshots WHERE currency = 'USD'").fetchone()
        stored = conn.execute("SELECT count(*) FROM fx_documents").fetchone()[0]
    # 0.11 USD x 34.5678 = 3.802458 -> 3.80 TRY, KDV 0.76; 0.05 USD x 34.5678 = 1.72839 -> 1.73 TRY, KDV 0.346 -> 0.35
    assert invoice == ("TRY", "USD", "34.5678000000", "TCMB:2026-10-30:USD", False, NOV_1, "5.5300", tax, total)
    assert lines == [("0.0500", "USD", "1.7300", vat[0], "TRY"), ("0.1100", "USD", "3.8000", vat[1], "TRY")]
    assert snapshot[:3] == ("OK", "34.5678000000", OCT_30) and not snapshot[4]
    assert stored == 2  # the bulletin and the ECB file, byte for byte
    assert _latest_check(instance, "fx_fresh") is True  # 30 October for an issue on 1 November: 2 days


def _close_with(october, chdb_path, instance, fx, tr_contract="CTR-A"):
    with psycopg.connect(october, autocommit=True) as conn:
        conn.execute("UPDATE contracts SET region = 'TR' WHERE contract_id = %s", (tr_contract,))
    defs = product_defs(october, chdb_path, fx_sources=FxSourcesResource(tcmb_base_url=fx.tcmb_base,
                                                                         ecb_base_url=fx.ecb_base))
    close_month(instance, Period.parse_month("2026-10"), definitions=defs)


def _latest_check(instance, name: str):
    return _latest_check_of(instance, "fx_snapshot", name)


def test_a_wrongly_dated_bulletin_stops_only_the_invoices_needing_it(october, chdb_path, instance, fx):
    fx.publish_tcmb(OCT_30, {"USD": (1, "34.5678")}, dated=OCT_28)
    _close_with(october, chdb_path, instance, fx)
    with psycopg.connect(october) as conn:
        drafts = dict(conn.execute("SELECT invoice_id, currency || ' ' || coalesce(sink_error, '-') FROM invoices"))
    assert drafts["CTR-A:2026-10:v1"] == ("USD no trustworthy USD->TRY rate for 2026-10: TCMB bulletin fetched for "
                                          "2026-10-30 is dated 2026-10-28")
    assert drafts["CTR-B:2026-10:v1"] == "TRY -" and drafts["CTR-C:2026-10:v1"] == "EUR -"  # the others proceed
    assert _latest_check(instance, "fx_rates_present") is False

    from billing_pipeline.sinks.parasut.issuing import issue_month
    outcome = {o.invoice_id: o for o in issue_month(october, None, Period.parse_month("2026-10")).outcomes}
    assert outcome["CTR-A:2026-10:v1"].status == "FAILED" and "is dated 2026-10-28" in outcome["CTR-A:2026-10:v1"].reason
    assert outcome["CTR-B:2026-10:v1"].status == "DRY_RUN"


def test_with_ecb_unreachable_the_rate_stands_and_the_cross_check_is_not_a_pass(october, chdb_path, instance, fx):
    fx.down.add("/eurofxref")  # TCMB answers, ECB does not
    _close_with(october, chdb_path, instance, fx)
    with psycopg.connect(october) as conn:
        snapshot = conn.execute("SELECT status, rate::text, ecb_rate, divergence_flagged FROM fx_snapshots "
                                "WHERE currency = 'USD'").fetchone()
    assert snapshot == ("OK", "34.5678000000", None, False)
    assert _latest_check(instance, "fx_rates_present") is True
    assert _latest_check(instance, "fx_agrees_with_ecb") is False  # nothing was compared: yellow, not "agrees"


def test_with_no_source_answering_the_last_known_rate_is_used_and_marked_estimated(october, chdb_path, instance, fx):
    with psycopg.connect(october, autocommit=True) as conn:
        conn.execute("""INSERT INTO fx_snapshots (period_start, currency, issue_date, status, rate, source, bulletin_date,
                            fetched_at, raw_sha256) VALUES ('2026-09-01', 'USD', '2026-10-01', 'OK', 33.9000, 'TCMB',
                            '2026-09-30', now(), %s)""", ("cd" * 32,))
    fx.down.add("/")
    _close_with(october, chdb_path, instance, fx)
    with psycopg.connect(october) as conn:
        row = conn.execute("SELECT currency, fx_rate::text, fx_snapshot_ref, fx_estimated, subtotal::text "
                           "FROM invoices WHERE invoice_id = 'CTR-A:2026-10:v1'").fetchone()
    # 0.05 x 33.9 = 1.695 -> 1.70; 0.11 x 33.9 = 3.729 -> 3.73
    assert row == ("TRY", "33.9000000000", "TCMB_LAST_KNOWN:2026-09-30:USD", True, "5.4300")
    assert _latest_check(instance, "fx_not_estimated") is False and _latest_check(instance, "fx_rates_present") is True
    assert _latest_check(instance, "fx_fresh") is False  # a 30 September bulletin for 1 November: 32 days old


def test_the_bulletin_of_today_in_istanbul_is_read_from_today_xml(fx):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    today = datetime.now(ZoneInfo("Europe/Istanbul")).date()
    fx.files["/kurlar/today.xml"] = tcmb_xml(today, {"USD": (1, "34.9000")})
    document = sources(fx).tcmb(today)
    assert fx.requests[-1] == "/kurlar/today.xml"
    assert parse_tcmb(document.body, expected_date=today).rates["USD"] == Decimal("34.9000")


def test_a_month_free_in_dollars_is_free_in_lira_and_the_checks_agree(october, chdb_path, instance, fx):
    """CTR-A Turkish with 100% off at 34.5000 TRY per USD: its lines 0.05 and 0.11 USD are 1.73 (1.725) and
    3.80 (3.795) TRY, 5.53 together, and the discount's -0.16 USD converts to -5.52: the month came to
    0.01 TRY and 0.01 KDV. The discount takes -5.53 (the lira check says why it differs), so it is free."""
    fx.publish_tcmb(OCT_30, {"USD": (1, "34.5000")})
    with psycopg.connect(october, autocommit=True) as conn:
        conn.execute("""INSERT INTO contract_discounts (contract_id, discount_id, kind, value, valid_from, description)
                        VALUES ('CTR-A', 'free', 'PERCENT', 100, '2026-10-01', 'Free month')""")
    _close_with(october, chdb_path, instance, fx)
    with psycopg.connect(october) as conn:
        invoice = conn.execute("SELECT subtotal::text, tax::text, total::text FROM invoices "
                               "WHERE invoice_id = 'CTR-A:2026-10:v1'").fetchone()
        lines = conn.execute("""SELECT source_amount::text, amount::text, discount_share::text, vat_amount::text
                                FROM invoice_lines WHERE invoice_id = 'CTR-A:2026-10:v1' ORDER BY line_no""").fetchall()
    assert invoice == ("0.0000", "0.0000", "0.0000")
    assert lines == [("0.0500", "1.7300", "1.7300", "0.0000"), ("0.1100", "3.8000", "3.8000", "0.0000"),
                     ("-0.1600", "-5.5300", None, "0.0000")]
    drafts = {c: (record.evaluation.passed, record.evaluation.metadata) for c in ("drafts_add_up", "lira_lines_match_rate")
              for record in instance.event_log_storage.get_asset_check_execution_history(
                  dg.AssetCheckKey(dg.AssetKey("invoice_drafts"), c), limit=1)}
    assert drafts["drafts_add_up"][0] is True and drafts["lira_lines_match_rate"][0] is True
    assert {k: drafts["lira_lines_match_rate"][1][k].value for k in ("converted_lines", "differing",
                                                                     "free_months_rounded_to_zero")} == {
        "converted_lines": 3, "differing": 0, "free_months_rounded_to_zero": 1}


def test_a_new_version_of_an_issued_lira_invoice_keeps_the_rate_it_was_issued_at(october, chdb_path, instance, fx,
                                                                                 usage_store):
    """CTR-A (USD, Turkish) issued at 34.5678; then TCMB's 30 October file read again at 35.0000 and
    one late request added (ETH 0.11 -> 0.12 USD). v2 converts at 34.5678 (0.12 x 34.5678 = 4.15
    TRY: a 0.35 TRY supplementary); at 35.0000 it re-priced the lines already invoiced too."""
    import pyarrow as pa
    from month_fixture import _row, october_events, ts

    _close_with(october, chdb_path, instance, fx)
    with psycopg.connect(october, autocommit=True) as conn:
        conn.execute("UPDATE invoices SET status = 'ISSUED' WHERE invoice_id = 'CTR-A:2026-10:v1'")
    fx.publish_tcmb(OCT_30, {"USD": (1, "35.0000"), "EUR": (1, "37.4321")})
    usage_store.insert_arrow("requests_raw", pa.Table.from_pylist(
        [_row(ts(2026, 10, 5, 18), "late-a0", "org_a", "prj_a1", "eth-mainnet")], schema=october_events().schema))
    _close_with(october, chdb_path, instance, fx)
    with psycopg.connect(october) as conn:
        rate = conn.execute("SELECT rate::text FROM fx_snapshots WHERE currency = 'USD'").fetchone()[0]
        v2 = conn.execute("SELECT fx_rate::text, fx_snapshot_ref FROM invoices "
                          "WHERE invoice_id = 'CTR-A:2026-10:v2'").fetchone()
        lines = conn.execute("""SELECT source_amount::text, amount::text FROM invoice_lines
                                WHERE invoice_id = 'CTR-A:2026-10:v2' ORDER BY line_no""").fetchall()
    assert rate == "35.0000000000"  # the month's snapshot moved
    assert v2 == ("34.5678000000", "TCMB:2026-10-30:USD")
    assert lines == [("0.0500", "1.7300"), ("0.1200", "4.1500")]
    assert _latest_check_of(instance, "invoice_drafts", "lira_lines_match_rate") is True


def _latest_check_of(instance, asset: str, name: str):
    record = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey(asset), name), limit=1)[0]
    return record.evaluation.passed
