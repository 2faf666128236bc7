"""Proof of delivery: a contract's raw requests for a range, deduplicated as billed, signed like the
audit snapshots and stored locked in S3; verifiable offline with `billing audit verify`."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

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
    assert check.ok and check.manifest["kind"] == "evidence" and check.manifest["requests"] == 11
    rows = list(csv.DictReader(io.StringIO(objects["requests.csv"].decode())))
    # a1-a7 (a1 and a2 re-delivered: once each), b1 at 23:59:59.999, b2, b3 and q2 (an unknown chain,
    # served but not billed); b5's first copy was on 30 September, b4 is November's
    assert sorted(r["request_id"] for r in rows) == ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "b1", "b2", "b3", "q2"]
    assert {r["source_ip"] for r in rows} == {"203.0.113.7"}
    assert rows[-1]["request_id"] == "b1" and rows[-1]["timestamp"].startswith("2026-10-31 23:59:59.999")
    assert objects["daily_totals.csv"].decode().splitlines()[1:] == [
        '"2026-10-05",7', '"2026-10-09",1', '"2026-10-10",2', '"2026-10-31",1']

    # verifiable offline, as a directory, with the product's command
    folder = tmp_path / "evidence"
    folder.mkdir()
    for name, data in objects.items():
        (folder / name).write_bytes(data)
    out = subprocess.run([sys.executable, "-m", "billing_pipeline.cli", "audit", "verify", str(folder), "--public-key",
                          str(signing_key)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "evidence OK: CTR-A (org_a) 2026-10-01T00:00:00+00:00 .. 2026-11-01T00:00:00+00:00, 11 requests" in out.stdout
    tampered = objects["requests.csv"].replace(b"203.0.113.7", b"203.0.113.8", 1)
    assert not verify_snapshot({**objects, "requests.csv": tampered}, objects[PUBLIC_KEY]).ok
    assert MANIFEST in objects and len(versions) == 5
