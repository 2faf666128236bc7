"""Reconciliation checks (both sides and the difference) and failing checks sent to a signed webhook."""

from __future__ import annotations

import http.server
import json
from datetime import date, datetime, timezone

import dagster as dg
import pytest

from billing_pipeline.domain.periods import Period
from billing_pipeline.sensors.check_alerts import check_alerts
from billing_pipeline.steps.alerts import SIGNATURE_HEADER, verify_signature
from billing_pipeline.close import close_month
from billing_pipeline.steps.reconciliation import (late_raw_rows, lira_lines_match_rate, renewal_notices,
                                                   rollups_match_clickhouse, rollups_rated_once, stuck_outbox)
from billing_pipeline.stores.postgres import transaction
from loopback import LoopbackServer
from parasut_fixture import seed_turkish_drafts

OCTOBER = Period.parse_month("2026-10")


def test_a_lira_line_off_by_a_kurus_is_shown_with_both_sides(db_url):
    with transaction(db_url) as conn:
        seed_turkish_drafts(conn)
        conn.execute("UPDATE invoice_lines SET source_amount = 0.05, source_currency = 'USD', fx_rate = 34.5678 "
                     "WHERE invoice_id = 'CTR-P:2026-10:v1' AND line_no = 1")  # 1.73: right
        conn.execute("UPDATE invoice_lines SET source_amount = 0.11, source_currency = 'USD', fx_rate = 34.5678, "
                     "amount = 3.81 WHERE invoice_id = 'CTR-P:2026-10:v1' AND line_no = 2")  # 3.80 expected
        finding = lira_lines_match_rate(conn, OCTOBER)
    assert not finding.passed and finding.counts == {"converted_lines": 2, "differing": 1,
                                                     "free_months_rounded_to_zero": 0}
    assert [tuple(str(v) for v in row) for row in finding.rows] == [
        ("CTR-P:2026-10:v1", "2", "0.1100", "34.5678000000", "3.8100", "3.80", "0.0100")]


@pytest.mark.parametrize("source,discount,subtotal,free", [("-0.16", "-5.53", "0", True),
                                                           ("-0.16", "-5.51", "0.02", False),
                                                           ("-0.15", "-5.53", "0", False)],
                         ids=["free in dollars and lira: accepted and counted", "not free in lira: shown",
                              "not free in dollars: shown"])
def test_only_a_month_free_in_dollars_may_have_its_discount_take_the_lira_roundings(db_url, source, discount,
                                                                                   subtotal, free):
    # at 34.5000: 0.05 and 0.11 USD are 1.73 (1.725) and 3.80 (3.795); 100% off, -0.16 USD, is -5.52 (-5.52)
    with transaction(db_url) as conn:
        seed_turkish_drafts(conn)
        for line_no, line_source in ((1, "0.05"), (2, "0.11")):
            conn.execute("UPDATE invoice_lines SET source_amount = %s, source_currency = 'USD', fx_rate = 34.5 "
                         "WHERE invoice_id = 'CTR-P:2026-10:v1' AND line_no = %s", (line_source, line_no))
        conn.execute("""INSERT INTO invoice_lines (invoice_id, line_no, charge_id, description, quantity, unit_price,
                            amount, currency, source_amount, source_currency, fx_rate)
                        VALUES ('CTR-P:2026-10:v1', 3, 'CTR-P:2026-10:DISCOUNT:d', 'Discount', 1, %s, %s, 'TRY',
                                %s, 'USD', 34.5)""", (discount, discount, source))
        conn.execute("UPDATE invoices SET subtotal = %s, tax = 0, total = %s WHERE invoice_id = 'CTR-P:2026-10:v1'",
                     (subtotal, subtotal))
        finding = lira_lines_match_rate(conn, OCTOBER)
    assert finding.passed is free
    assert finding.counts == {"converted_lines": 3, "differing": 0 if free else 1,
                              "free_months_rounded_to_zero": 1 if free else 0}


def test_renewal_notices_list_contracts_ending_within_30_days_without_auto_renew(db_url):
    with transaction(db_url) as conn:
        seed_turkish_drafts(conn)
        conn.execute("UPDATE contracts SET end_at = '2026-11-20' WHERE contract_id = 'CTR-B'")
        conn.execute("UPDATE contracts SET end_at = '2026-11-20', auto_renew = true WHERE contract_id = 'CTR-P'")
        finding = renewal_notices(conn, OCTOBER)
    assert not finding.passed and [(r[0], r[3]) for r in finding.rows] == [("CTR-B", 19)]


def test_an_outbox_write_pending_for_over_an_hour_is_stuck(db_url):
    with transaction(db_url) as conn:
        seed_turkish_drafts(conn)
        conn.execute("""INSERT INTO sink_outbox (sink, invoice_id, idempotency_key, payload, status, updated_at)
                        VALUES ('PARASUT', 'CTR-B:2026-10:v1', 'k-old', '{}', 'PENDING', now() - interval '2 hours'),
                               ('PARASUT', 'CTR-P:2026-10:v1', 'k-new', '{}', 'PENDING', now()),
                               ('STRIPE', NULL, 'k-sent', '{}', 'SENT', now() - interval '3 hours')""")
        parasut, stripe = stuck_outbox(conn, "PARASUT"), stuck_outbox(conn, "STRIPE")
    assert not parasut.passed and parasut.counts["stuck"] == 1 and parasut.rows[0][0] == "k-old"
    assert stripe.passed


class Receiver(http.server.BaseHTTPRequestHandler):
    received: list = []
    fail_next = 0

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Receiver.fail_next:
            Receiver.fail_next -= 1
            self.send_response(500)
        else:
            Receiver.received.append((body, self.headers.get(SIGNATURE_HEADER)))
            self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _report(instance, passed: bool, partition: str) -> None:
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("invoice_drafts"), check_name="drafts_add_up", passed=passed,
        severity=dg.AssetCheckSeverity.ERROR, metadata={"problems": 1}, partition=partition))


def test_failing_checks_reach_the_webhook_signed_once_each(monkeypatch, instance):
    Receiver.received, Receiver.fail_next = [], 0
    with LoopbackServer(Receiver) as hook:
        monkeypatch.setenv("BILLING_ALERT_WEBHOOK_URL", hook.url)
        monkeypatch.setenv("BILLING_ALERT_WEBHOOK_SECRET", "alert-secret")
        monkeypatch.setattr("billing_pipeline.steps.alerts.time.sleep", lambda s: None)
        _report(instance, False, "2026-09-01")  # before alerting started: not replayed
        with dg.build_sensor_context(instance=instance) as context:
            assert "starts from the next" in check_alerts(context).skip_message
            _report(instance, True, "2026-10-01")
            _report(instance, False, "2026-11-01")
            Receiver.fail_next = 3  # the webhook is down for one tick's three attempts
            assert "delivery failed" in check_alerts(context).skip_message
            assert "1 failing checks sent" in check_alerts(context).skip_message
            assert "0 failing checks sent" in check_alerts(context).skip_message
    assert len(Receiver.received) == 1
    body, header = Receiver.received[0]
    alert = json.loads(body)
    assert (alert["asset"], alert["check"], alert["partition"], alert["severity"]) == (
        "invoice_drafts", "drafts_add_up", "2026-11-01", "ERROR")
    assert alert["metadata"] == {"problems": "1"}
    assert verify_signature(body, header, "alert-secret")
    assert not verify_signature(body, header, "other-secret")
    assert not verify_signature(body, header, "alert-secret", now=datetime.now(timezone.utc).timestamp() + 301)


def test_without_a_webhook_url_alerts_stay_in_the_ui(monkeypatch, instance):
    monkeypatch.delenv("BILLING_ALERT_WEBHOOK_URL", raising=False)
    with dg.build_sensor_context(instance=instance) as context:
        assert "show in the UI only" in check_alerts(context).skip_message


def test_malformed_or_replayed_signatures_are_refused():
    assert not verify_signature(b"{}", "t=1,v1=00", "s")  # 1970: far outside the 300 s tolerance
    assert not verify_signature(b"{}", "garbage", "s")


def test_rollups_against_clickhouse_and_late_rows(october, usage_store, billing_defs, instance):
    close_month(instance, OCTOBER, definitions=billing_defs)
    start, end = datetime(2026, 10, 1, tzinfo=timezone.utc), datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert rollups_match_clickhouse(usage_store, october, start, end).passed
    with transaction(october) as conn:  # a rollup row that lost a request on its way into PostgreSQL
        conn.execute("""UPDATE usage_rollups SET requests = requests - 1, successful_requests = successful_requests - 1
                        WHERE day = '2026-10-05' AND org_id = 'org_a' AND chain = 'eth-mainnet'""")
    finding = rollups_match_clickhouse(usage_store, october, start, end)
    # a1-a7 on 5 October: 7 requests, 6 successful (a3 failed), plus org_d's daily request
    assert finding.rows == [(date(2026, 10, 5), "requests", 8, 7, -1),
                            (date(2026, 10, 5), "successful_requests", 7, 6, -1)]
    # the priced meters too: compute units edited in PostgreSQL (CTR-A's October: 450 EUR -> 851.20)
    with transaction(october) as conn:
        conn.execute("""UPDATE usage_rollups SET requests = requests + 1, successful_requests = successful_requests + 1,
                               meter_compute_units = meter_compute_units + 2000000000
                        WHERE day = '2026-10-05' AND org_id = 'org_a' AND chain = 'eth-mainnet'""")
    finding = rollups_match_clickhouse(usage_store, october, start, end)
    assert [(day, meter, pg - ch) for day, meter, ch, pg, _ in finding.rows] == [
        (date(2026, 10, 5), "meter_compute_units", 2000000000)]

    assert late_raw_rows(usage_store, october, today=date(2026, 11, 5)).passed
    from month_fixture import october_events
    late = october_events().slice(0, 3)  # three more deliveries for 1-3 October, after their rollup
    usage_store.insert_arrow("requests_raw", late)
    finding = late_raw_rows(usage_store, october, today=date(2026, 11, 5))
    assert finding.counts == {"days_checked": 32, "late_rows": 3}  # the last 35 days: 1 Oct .. 1 Nov
    assert [(r[0], r[3]) for r in finding.rows] == [(date(2026, 10, 1), 1), (date(2026, 10, 2), 1),
                                                    (date(2026, 10, 3), 1)]


def test_every_rollup_row_is_rated_once_or_counted_as_unrated(october, billing_defs, instance):
    close_month(instance, OCTOBER, definitions=billing_defs)
    with transaction(october) as conn:
        finding = rollups_rated_once(conn, OCTOBER)
        # 31 days of org_d, 5 Oct (org_a eth), 10 + 31 Oct (org_a bsc; b5 is September's), 3 Oct (org_b),
        # 20 Oct x2 (org_c eth, base), 7 Oct (org_x, unrated): 38 rows, 31 + 7 + 3 + 2 + 13 + 4 = 60 requests
        assert finding.passed and finding.counts == {"usage_parts": 38, "requests": 60, "problems": 0}
        # a day's rows lost after its rollup: rated and unrated both miss them, the day's record does not
        conn.execute("SAVEPOINT lost")
        conn.execute("DELETE FROM usage_rollups WHERE day = '2026-10-15'")
        lost = rollups_rated_once(conn, OCTOBER)
        assert not lost.passed and lost.rows == [
            (date(2026, 10, 15), None, None, "usage_rollups rows vs the requests the day's rollup recorded", 0, 1)]
        conn.execute("ROLLBACK TO SAVEPOINT lost")
        # a contract for org_x signed after the month was rated: its rows are neither rated nor unrated now
        conn.execute("INSERT INTO customers (org_id, legal_name, country) VALUES ('org_x', 'Xeno Labs', 'US')")
        conn.execute("""INSERT INTO contracts (contract_id, org_id, plan_id, contract_type, currency, region, start_at)
                        VALUES ('CTR-X', 'org_x', 'pro_test', 'METERED', 'USD', 'GLOBAL', '2026-01-01')""")
        # and a second contract for org_d, overlapping CTR-D from 31 October
        conn.execute("""INSERT INTO contracts (contract_id, org_id, plan_id, contract_type, currency, region, start_at)
                        VALUES ('CTR-D2', 'org_d', 'pro_test', 'METERED', 'USD', 'GLOBAL', '2026-10-31')""")
        finding = rollups_rated_once(conn, OCTOBER)
    assert not finding.passed and finding.rows == [
        (None, "org_x", "eth-mainnet", "requests no contract covers vs unrated_usage", 0, 4),
        (date(2026, 10, 7), "org_x", "eth-mainnet", "contract CTR-X has no rated charges", 4, 0),
        (date(2026, 10, 31), "org_d", "polygon-mainnet", "covered by 2 contracts", 1, 2)]


def test_a_correction_documents_lira_line_is_a_difference_of_two_rounded_lines_not_checked_against_the_rate(db_url):
    # 100 USD less a 10% discount, then 20%: the discount line -50.00 USD went from -2,122.84 TRY
    # (v1) to -4,245.67 TRY (v2) at 42.4567, so the credit note carries -2,122.83, not
    # round(-50.00 x 42.4567) = -2,122.84; corrections_add_up holds it to the versions' lines.
    # Checked against the rate, it blocked the month: no draft, dispute or issue (Stripe's too).
    with transaction(db_url) as conn:
        seed_turkish_drafts(conn)
        conn.execute("""INSERT INTO invoices (invoice_id, contract_id, org_id, period_start, period_end, version, kind,
                            corrects_invoice_id, status, currency, subtotal, tax_rate, tax, total, source_currency,
                            fx_rate)
                        SELECT 'CTR-P:2026-10:v2:credit-note', contract_id, org_id, period_start, period_end, 2,
                               'CREDIT_NOTE', invoice_id, 'DRAFT', currency, -2122.83, tax_rate, 0, -2122.83, 'USD',
                               42.4567
                        FROM invoices WHERE invoice_id = 'CTR-P:2026-10:v1'""")
        conn.execute("""INSERT INTO invoice_lines (invoice_id, line_no, charge_id, description, quantity, unit_price,
                            amount, currency, source_amount, source_currency, fx_rate, amount_before, amount_after)
                        VALUES ('CTR-P:2026-10:v2:credit-note', 1, 'CTR-P:2026-10:DISCOUNT:d', 'Discount', 1,
                                -2122.83, -2122.83, 'TRY', -50.00, 'USD', 42.4567, -2122.84, -4245.67)""")
        conn.execute("UPDATE invoices SET status = 'ISSUED' WHERE invoice_id = 'CTR-P:2026-10:v2:credit-note'")
        finding = lira_lines_match_rate(conn, OCTOBER)
    assert finding.passed and finding.counts == {"converted_lines": 0, "differing": 0,
                                                 "free_months_rounded_to_zero": 0}


def test_the_close_names_the_checks_that_failed(october, usage_store, billing_defs, instance):
    # a delivery on an unknown chain: quarantined, the close succeeds, and only the UI said so
    from month_fixture import _row, october_events, ts
    import pyarrow as pa
    usage_store.insert_arrow("requests_raw", pa.Table.from_pylist(
        [_row(ts(2026, 10, 12, 9), "doge-1", "org_a", "prj_a1", "dogechain")], schema=october_events().schema))
    result = close_month(instance, OCTOBER, definitions=billing_defs)
    assert "usage_rollups.no_quarantined_rows (ERROR)" in result.failed_checks
    assert all(check.endswith(("(ERROR)", "(WARN)")) for check in result.failed_checks)
