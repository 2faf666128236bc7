"""Proof of delivery: a contract's raw requests for a range, deduplicated as billed, signed like the
audit snapshots and stored locked in S3; verifiable offline with `billing audit verify`."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import psycopg

from billing_pipeline.domain.audit import MANIFEST, PUBLIC_KEY, verify_snapshot
from billing_pipeline.jobs.evidence import export_evidence_job
from billing_pipeline.resources import BillingDatabase, ClickHouseResource
from billing_pipeline.resources.audit_storage import AuditStorageResource
from billing_pipeline.stores.audit_bucket import AuditBucket


def test_evidence_for_october_is_what_was_billed_signed_and_locked(october, chdb_path, instance, s3_endpoint,
                                                                 signing_key, tmp_path):
    AuditBucket("evidence-test", s3_endpoint).create()
    result = export_evidence_job.execute_in_process(
        instance=instance, run_config={"ops": {"export_contract_evidence": {"config": {
            "contract_id": "CTR-A", "from_date": "2026-10-01", "to_date": "2026-11-01"}}}},
        resources={"clickhouse": ClickHouseResource(chdb_path=str(chdb_path)), "billing_db": BillingDatabase(url=october),
                   "audit_storage": AuditStorageResource(endpoint_url=s3_endpoint, bucket="evidence-test")})
    assert result.success
    bucket = AuditBucket("evidence-test", s3_endpoint)
    objects, versions = bucket.download("evidence/CTR-A/2026-10-01_2026-11-01")
    check = verify_snapshot(objects, objects[PUBLIC_KEY])
    assert check.ok and check.manifest["kind"] == "evidence"
    assert (check.manifest["requests"], check.manifest["unbilled_rows"]) == (10, 1)
    rows = list(csv.DictReader(io.StringIO(objects["requests.csv"].decode())))
    # billed, as the rollups bill CTR-A: a1-a7 (a1 and a2 re-delivered: once each), b1 at
    # 23:59:59.999, b2, b3 (b5's first copy was on 30 September, b4 is November's); and q2, on an
    # unknown chain: served, quarantined, not billed
    assert sorted((r["request_id"], r["billed"]) for r in rows) == [
        *[(f"a{i}", "true") for i in range(1, 8)], ("b1", "true"), ("b2", "true"), ("b3", "true"), ("q2", "false")]
    assert {r["source_ip"] for r in rows} == {"203.0.113.7"}
    assert rows[-1]["request_id"] == "b1" and rows[-1]["timestamp"].startswith("2026-10-31 23:59:59.999")
    assert objects["daily_totals.csv"].decode().splitlines() == [
        '"day","requests","unbilled_rows"', '"2026-10-05",7,0', '"2026-10-09",0,1', '"2026-10-10",2,0',
        '"2026-10-31",1,0']

    # verifiable offline, as a directory, with the product's command
    folder = tmp_path / "evidence"
    folder.mkdir()
    for name, data in objects.items():
        (folder / name).write_bytes(data)
    out = subprocess.run([sys.executable, "-m", "billing_pipeline.cli", "audit", "verify", str(folder), "--public-key",
                          str(signing_key)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert ("evidence OK: CTR-A (org_a) 2026-10-01T00:00:00+00:00 .. 2026-11-01T00:00:00+00:00, 10 requests "
            "(and 1 rows not billed)") in out.stdout
    tampered = objects["requests.csv"].replace(b"203.0.113.7", b"203.0.113.8", 1)
    assert not verify_snapshot({**objects, "requests.csv": tampered}, objects[PUBLIC_KEY]).ok
    assert MANIFEST in objects and len(versions) == 5


def test_the_billed_requests_of_the_evidence_are_the_rollups_day_by_day(october, usage_store):
    """A request first delivered on an unknown chain (quarantined) and again on a known one is
    billed once, by its billable copy: the evidence listed only the first delivery, so the billed
    request was missing from the proof (and an unknown chain's row counted as delivered). Copies at
    the same instant are decided by the rollups' tuple in both (e2: the first project)."""
    from datetime import date, datetime, timedelta, timezone

    import pyarrow as pa
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from billing_pipeline.steps.evidence import export_evidence
    from billing_pipeline.steps.usage import roll_up_usage
    from month_fixture import _row, october_events, ts

    usage_store.insert_arrow("requests_raw", pa.Table.from_pylist([
        _row(ts(2026, 10, 12, 10), "e1", "org_a", "prj_a1", "dogecoin-mainnet"),
        _row(ts(2026, 10, 12, 10, 0, 1), "e1", "org_a", "prj_a1", "eth-mainnet"),
        _row(ts(2026, 10, 13, 10), "e2", "org_a", "prj_a1", "eth-mainnet", method="eth_getLogs"),
        _row(ts(2026, 10, 13, 10), "e2", "org_a", "prj_a2", "eth-mainnet", method="eth_call")],
        schema=october_events().schema))
    start = datetime(2026, 9, 30, tzinfo=timezone.utc)
    roll_up_usage(usage_store, october, start, start + timedelta(days=33))
    with psycopg.connect(october) as conn:
        billed = conn.execute("""SELECT day::text, project_id, chain, sum(requests)::int FROM usage_rollups
                                 WHERE org_id = 'org_a' AND day >= '2026-10-01' AND day < '2026-11-01'
                                 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""").fetchall()
    evidence = export_evidence(usage_store, october, "CTR-A", date(2026, 10, 1), date(2026, 11, 1),
                               Ed25519PrivateKey.generate())
    rows = list(csv.DictReader(io.StringIO(evidence.objects["requests.csv"].decode())))
    per_day: dict[tuple, int] = {}
    for r in rows:
        if r["billed"] == "true":
            key = (r["timestamp"][:10], r["project_id"], r["chain"])
            per_day[key] = per_day.get(key, 0) + 1
    assert sorted((*key, n) for key, n in per_day.items()) == billed
    assert ("2026-10-12", "prj_a1", "eth-mainnet", 1) in billed and ("2026-10-13", "prj_a1", "eth-mainnet", 1) in billed
    assert [(r["request_id"], r["chain"], r["billed"]) for r in rows if r["request_id"].startswith("e")] == [
        ("e1", "dogecoin-mainnet", "false"), ("e1", "eth-mainnet", "true"), ("e2", "eth-mainnet", "true")]
    assert (evidence.requests, evidence.unbilled_rows) == (12, 2)  # q2 and e1's first delivery


def _october_for_ctr_t(october, usage_store, start_at: str, end_at: str | None, times: list[tuple]):
    """CTR-T (org_t, billed in Istanbul) with one eth request at each of ``times`` (UTC), rolled up
    and rated for October: (the requests invoiced, October's evidence)."""
    from datetime import date, datetime, timedelta, timezone

    import pyarrow as pa
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from billing_pipeline.domain.periods import Period
    from billing_pipeline.steps.evidence import export_evidence
    from billing_pipeline.steps.rating import rate_month
    from billing_pipeline.steps.usage import roll_up_usage
    from month_fixture import _row, october_events, ts

    with psycopg.connect(october) as conn:
        conn.execute("INSERT INTO customers (org_id, legal_name, country) VALUES ('org_t', 'Tuna Ltd', 'TR')")
        conn.execute("""INSERT INTO contracts (contract_id, org_id, plan_id, contract_type, currency, region, start_at,
                            end_at, auto_renew, timezone) VALUES ('CTR-T', 'org_t', 'pro_test', 'METERED', 'USD',
                            'GLOBAL', %s, %s, %s, 'Europe/Istanbul')""", (start_at, end_at, end_at is None))
    usage_store.insert_arrow("requests_raw", pa.Table.from_pylist(
        [_row(ts(*t), f"t{i}", "org_t", "prj_t", "eth-mainnet") for i, t in enumerate(times)],
        schema=october_events().schema))
    start = datetime(2026, 9, 30, tzinfo=timezone.utc)
    roll_up_usage(usage_store, october, start, start + timedelta(days=33))
    rate_month(october, Period.parse_month("2026-10"))
    with psycopg.connect(october) as conn:
        invoiced = conn.execute("""SELECT sum(quantity) FROM rated_charges WHERE contract_id = 'CTR-T'
                                   AND meter = 'requests'""").fetchone()[0]
    return invoiced, export_evidence(usage_store, october, "CTR-T", date(2026, 10, 1), date(2026, 11, 1),
                                     Ed25519PrivateKey.generate())


def test_a_zoned_customers_month_of_evidence_is_its_invoiced_month(october, usage_store):
    """The range is the contract's calendar: a customer billed in Istanbul (UTC+3) is invoiced its
    local October, 21:00 UTC on 30 September to 21:00 UTC on 31 October; evidence cut at UTC
    midnights proved another month (here 4 requests against the 3 invoiced)."""
    invoiced, evidence = _october_for_ctr_t(october, usage_store, "2026-01-01", None, [
        (2026, 9, 30, 22),  # 1 October, 01:00 in Istanbul
        (2026, 10, 15, 12),
        (2026, 10, 31, 20, 59, 59),  # 23:59:59 there
        (2026, 10, 31, 21),  # 1 November there
        (2026, 10, 31, 22)])
    assert (invoiced, evidence.requests) == (3, 3)
    assert evidence.objects["daily_totals.csv"].decode().splitlines()[1:] == [
        '"2026-10-01",1,0', '"2026-10-15",1,0', '"2026-10-31",1,0']
    manifest = json.loads(evidence.objects["manifest.json"])
    assert (manifest["from"], manifest["to"], manifest["timezone"]) == (
        "2026-09-30T21:00:00+00:00", "2026-10-31T21:00:00+00:00", "Europe/Istanbul")


def test_evidence_of_a_contract_starting_and_ending_inside_a_local_day_is_its_billed_days(october, usage_store):
    """Signed at 01:00 and ended at 01:00 on Istanbul's calendar (22:00 UTC the day before): the
    contract bills whole local days, the 16th to the 20th. Evidence cut at the two instants left out
    the 16th's first hour, which was billed, and took in the 21st's, which was not."""
    invoiced, evidence = _october_for_ctr_t(october, usage_store, "2026-10-15T22:00:00Z", "2026-10-20T22:00:00Z", [
        (2026, 10, 15, 21, 30),  # the 16th, 00:30 there: billed
        (2026, 10, 16, 12),
        (2026, 10, 20, 12),
        (2026, 10, 20, 21, 30)])  # the 21st there: not billed
    assert (invoiced, evidence.requests) == (3, 3)
    assert evidence.objects["daily_totals.csv"].decode().splitlines()[1:] == ['"2026-10-16",2,0', '"2026-10-20",1,0']
    manifest = json.loads(evidence.objects["manifest.json"])
    assert (manifest["from"], manifest["to"]) == ("2026-10-15T21:00:00+00:00", "2026-10-20T21:00:00+00:00")


def test_an_auto_renewing_contract_past_its_first_term_has_evidence(october, usage_store):
    """Coverage is contracts_in_force's, as rating's: an auto-renewing contract whose first term
    ended in June still bills October, and its evidence was cut at the term's end (empty)."""
    from datetime import date

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from billing_pipeline.steps.evidence import export_evidence

    with psycopg.connect(october) as conn:
        conn.execute("UPDATE contracts SET auto_renew = true, end_at = '2026-06-01' WHERE contract_id = 'CTR-A'")
    evidence = export_evidence(usage_store, october, "CTR-A", date(2026, 10, 1), date(2026, 11, 1),
                               Ed25519PrivateKey.generate())
    assert (evidence.requests, evidence.unbilled_rows) == (10, 1)
