"""The Parasut sink in Dagster after a real month close: its checks red on bad input, green after the fix."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import dagster as dg
import psycopg

from billing_pipeline.assets.parasut_invoices import parasut_invoices
from billing_pipeline.close import close_month
from billing_pipeline.domain.periods import Period
from billing_pipeline.resources.audit_storage import AuditStorageResource
from billing_pipeline.resources.fx import FxSourcesResource
from billing_pipeline.resources.parasut import ParasutResource
from billing_pipeline.stores.audit_bucket import AuditBucket
from fx_server import FxServer
from parasut_server import ParasutServer
from product_defs import product_defs


def test_the_fixed_turkish_contract_becomes_an_e_fatura_after_its_tax_number_is_fixed(october, chdb_path, instance,
                                                                                      s3_endpoint, signing_key):
    AuditBucket("billing-docs", s3_endpoint).create()
    with psycopg.connect(october, autocommit=True) as conn:
        conn.execute("UPDATE customers SET tax_id = NULL WHERE org_id = 'org_b'")
    with ParasutServer(rate_limit=None, job_seconds_until_done=0.02) as server:
        server.parasut.inboxes["1234567890"] = ["urn:mail:defaultpk@beta.test"]
        defs = product_defs(october, chdb_path, audit_storage=AuditStorageResource(
            endpoint_url=s3_endpoint, bucket="billing-docs"), parasut=ParasutResource(
            base_url=server.url, company_id="1234", client_id="cid", client_secret="csecret",
            username="api@example.test", password="pw", requests_per_window=1000, window_seconds=1.0,
            poll_interval_seconds=0.01))
        close_month(instance, Period.parse_month("2026-10"), definitions=defs)
        job = defs.resolve_implicit_global_asset_job_def()

        def run():
            result = job.execute_in_process(instance=instance, asset_selection=[parasut_invoices.key],
                                            partition_key="2026-10-01")
            checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
            return result.asset_materializations_for_node("parasut_invoices")[0].metadata, checks

        meta, checks = run()
        assert checks["all_turkish_invoices_issued"].passed is False
        assert "customer org_b has no tax number" in checks["all_turkish_invoices_issued"].metadata["reasons"].value
        assert server.parasut.writes() == 0

        with psycopg.connect(october, autocommit=True) as conn:
            conn.execute("UPDATE customers SET tax_id = '1234567890' WHERE org_id = 'org_b'")
        meta, checks = run()
        assert {name: c.passed for name, c in checks.items()} == {"all_turkish_invoices_issued": True,
                                                                  "parasut_totals_match": True,
                                                                  "outbox_not_stuck": True,
                                                                  "parasut_invoices_unchanged": True}
        assert (meta["issued"].value, meta["e_fatura"].value, meta["pdfs_stored"].value) == (1, 1, 1)
        beta = server.parasut.sales_invoices_for("1234567890")
        assert [(d["description"], d["unit_price"]) for d in beta[0]["details"]] == [
            ("Monthly RPC Service - 25,000 TL", 25000)]
    with psycopg.connect(october) as conn:
        row = conn.execute("""SELECT status, e_document_kind, external_total::text, total::text, pdf_location,
                                     appendix_location FROM invoices WHERE invoice_id = 'CTR-B:2026-10:v1'""").fetchone()
    assert row[:4] == ("ISSUED", "E_FATURA", "30000.0000", "30000.0000")
    assert row[4].startswith("s3://billing-docs/invoices/2026-10/CTR-B_2026-10_v1.pdf?versionId=")
    assert row[5].startswith("s3://billing-docs/invoices/2026-10/CTR-B_2026-10_v1-usage.pdf?versionId=")
    assert dg.AssetKey("parasut_invoices") in defs.resolve_asset_graph().get_all_asset_keys()


def test_a_turkish_discount_goes_to_parasut_as_line_discounts_and_its_totals_match_ours(october, chdb_path, instance,
                                                                                       s3_endpoint, signing_key):
    """CTR-A made Turkish (a person, e-Arsiv), rated in dollars and converted at 34.5678, with 50% off:
    lines 1.73 and 3.80 TRY, the discount -0.08 USD -> -2.77 TRY. As a negative line of its own the
    discount's KDV was -0.55 and the month's 0.35 + 0.76 - 0.55 = 0.56, and GIB refuses the line;
    spread over the lines (0.87 and 1.90) their KDV is 0.17 + 0.38 = 0.55, as Parasut computes it."""
    AuditBucket("billing-docs", s3_endpoint).create()
    with psycopg.connect(october, autocommit=True) as conn:
        conn.execute("UPDATE customers SET country = 'TR', tax_id = '10000000146' WHERE org_id = 'org_a'")
        conn.execute("UPDATE contracts SET region = 'TR' WHERE contract_id = 'CTR-A'")
        conn.execute("""INSERT INTO contract_discounts (contract_id, discount_id, kind, value, valid_from, description)
                        VALUES ('CTR-A', 'launch', 'PERCENT', 50, '2026-10-01', 'Launch discount')""")
    with ParasutServer(rate_limit=None, job_seconds_until_done=0.02) as server, FxServer() as fx:
        fx.publish_tcmb(date(2026, 10, 30), {"USD": (1, "34.5678")})
        fx.publish_ecb({date(2026, 10, 30): {"USD": "1.0850", "TRY": "37.6200"}})
        server.parasut.inboxes["1234567890"] = ["urn:mail:defaultpk@beta.test"]
        defs = product_defs(october, chdb_path, audit_storage=AuditStorageResource(
            endpoint_url=s3_endpoint, bucket="billing-docs"), parasut=ParasutResource(
            base_url=server.url, company_id="1234", client_id="cid", client_secret="csecret",
            username="api@example.test", password="pw", requests_per_window=1000, window_seconds=1.0,
            poll_interval_seconds=0.01), fx_sources=FxSourcesResource(tcmb_base_url=fx.tcmb_base,
                                                                      ecb_base_url=fx.ecb_base))
        close_month(instance, Period.parse_month("2026-10"), definitions=defs)
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[parasut_invoices.key], partition_key="2026-10-01")
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        person = server.parasut.sales_invoices_for("10000000146")
    assert checks == {"all_turkish_invoices_issued": True, "parasut_totals_match": True, "outbox_not_stuck": True,
                      "parasut_invoices_unchanged": True}
    assert [(d["description"], d["unit_price"], d.get("discount_type"), d.get("discount_value"))
            for d in person[0]["details"]] == [("BSC Mainnet - 3 requests", Decimal("1.73"), "amount", Decimal("0.87")),
                                               ("ETH Mainnet - 7 requests", Decimal("3.80"), "amount", Decimal("1.90"))]
    with psycopg.connect(october) as conn:
        row = conn.execute("""SELECT status, e_document_kind, subtotal::text, tax::text, total::text,
                                     external_subtotal::text, external_tax::text, external_total::text
                              FROM invoices WHERE invoice_id = 'CTR-A:2026-10:v1'""").fetchone()
    assert row == ("ISSUED", "E_ARSIV", "2.7600", "0.5500", "3.3100", "2.7600", "0.5500", "3.3100")
