"""Signed audit snapshots on a moto S3 server over HTTP: Object Lock, offline verify, tampering."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import boto3
import dagster as dg
import psycopg
import pytest

from billing_pipeline.close import close_month
from billing_pipeline.domain.periods import Period
from billing_pipeline.errors import ConfigError
from billing_pipeline.resources.audit_storage import AuditStorageResource
from billing_pipeline.steps.audit import load_signing_key
from billing_pipeline.stores.audit_bucket import AuditBucket, AuditStorageError
from billing_pipeline.stores.ledger import verify
from product_defs import product_defs

PREFIX = "snapshots/2026-10"


@pytest.fixture
def snapshot(october, chdb_path, instance, s3_endpoint, signing_key):
    AuditBucket("audit-test", s3_endpoint).create()
    defs = product_defs(october, chdb_path,
                        audit_storage=AuditStorageResource(endpoint_url=s3_endpoint, bucket="audit-test"))
    close_month(instance, Period.parse_month("2026-10"), definitions=defs)  # ends with audit_snapshot
    assert instance.get_latest_materialization_event(dg.AssetKey("audit_snapshot")) is not None
    return october


def run_verify(*args, db_url=None, endpoint=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update({"BILLING_AUDIT_S3_ENDPOINT": endpoint or "", "BILLING_DATABASE_URL": db_url or ""})
    return subprocess.run([sys.executable, "-m", "billing_pipeline.cli", "audit", "verify", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_snapshot_is_locked_signed_verified_and_in_the_ledger(snapshot, s3_endpoint, signing_key):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    assert s3.get_object_lock_configuration(Bucket="audit-test")["ObjectLockConfiguration"]["ObjectLockEnabled"] \
        == "Enabled"
    names = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="audit-test", Prefix=PREFIX)["Contents"])
    assert names == [f"{PREFIX}/{n}" for n in [
        "contract_amendments.csv", "contract_discounts.csv", "contracts.csv", "credit_consumed_before.csv",
        "credit_grants.csv", "customers.csv",
        "fx_rates.csv",
        "fx_snapshots.csv", "invoice_lines.csv", "invoices.csv", "manifest.json", "manifest.sig", "plans.csv",
        "public_key.pem", "rated_charges.csv", "source_totals.csv", "usage_before_local_midnight.csv",
        "usage_rollups.csv"]]
    head = s3.head_object(Bucket="audit-test", Key=f"{PREFIX}/manifest.json")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"].year >= 2036  # ten years
    with pytest.raises(AuditStorageError, match="AccessDenied"):
        AuditBucket("audit-test", s3_endpoint).delete_version(PREFIX, "manifest.json", head["VersionId"])

    ok = run_verify(f"s3://audit-test/{PREFIX}", "--public-key", str(signing_key), "--ledger",
                    "--prove-line", "CTR-A:2026-10:v1#2", db_url=snapshot, endpoint=s3_endpoint)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "snapshot OK: 2026-10, 15 files, 9 invoice lines" in ok.stdout
    assert "line: CTR-A:2026-10:v1,2," in ok.stdout and "proof leads to merkle root" in ok.stdout

    with psycopg.connect(snapshot) as conn:
        assert verify(conn).ok
        accounts = [r[0] for r in conn.execute(
            "SELECT account FROM ledger WHERE event = 'AUDIT_SNAPSHOT' ORDER BY entry_id")]
    assert len(accounts) == 19 and accounts[-1] == f"audit:location:s3://audit-test/{PREFIX}"  # 18 objects and the location
    assert any(a.startswith("audit:manifest.json@") for a in accounts)


def test_an_overwrite_is_detected_by_hash_and_by_the_ledger(snapshot, s3_endpoint, signing_key):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.put_object(Bucket="audit-test", Key=f"{PREFIX}/invoice_lines.csv", Body=b"invoice_id,line_no\nforged,1\n")
    bad = run_verify(f"s3://audit-test/{PREFIX}", "--public-key", str(signing_key), "--ledger",
                     db_url=snapshot, endpoint=s3_endpoint)
    assert bad.returncode == 1
    assert "FAIL invoice_lines.csv: SHA-256" in bad.stdout
    assert "FAIL invoice_lines.csv: the Merkle root of its lines differs" in bad.stdout
    assert "FAIL invoice_lines.csv: current version" in bad.stdout and "is not the version" in bad.stdout


def test_any_changed_byte_fails_and_names_the_file(snapshot, s3_endpoint, signing_key, tmp_path):
    objects, _ = AuditBucket("audit-test", s3_endpoint).download(PREFIX)
    folder = tmp_path / "snapshot"
    folder.mkdir()
    for name, data in objects.items():
        (folder / name).write_bytes(data)
    assert run_verify(str(folder), "--public-key", str(signing_key)).returncode == 0
    invoices = (folder / "invoices.csv").read_bytes()
    (folder / "invoices.csv").write_bytes(invoices.replace(b"30000.0000", b"30000.0001"))
    bad = run_verify(str(folder), "--public-key", str(signing_key))
    assert bad.returncode == 1 and bad.stdout.startswith("FAIL invoices.csv: SHA-256")
    (folder / "invoices.csv").write_bytes(invoices)
    manifest = (folder / "manifest.json").read_bytes()
    (folder / "manifest.json").write_bytes(manifest.replace(b'"month":"2026-10"', b'"month":"2026-11"'))
    bad = run_verify(str(folder), "--public-key", str(signing_key))
    assert bad.returncode == 1 and "FAIL manifest.json: the signature does not match" in bad.stdout


def test_a_resigned_misplaced_or_padded_snapshot_fails(snapshot, s3_endpoint, signing_key, tmp_path):
    """Anyone who rewrites a snapshot can sign it again and put their own key beside it: only the
    key published apart from it, or the ledger's record of its manifest, tells. A genuine snapshot
    of another month, or one with a file added, is not this month's snapshot either."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from billing_pipeline.domain.audit import MANIFEST, PUBLIC_KEY, SIGNATURE, build_snapshot

    objects, _ = AuditBucket("audit-test", s3_endpoint).download(PREFIX)
    genuine = tmp_path / "genuine" / "2026-10"
    genuine.mkdir(parents=True)
    for name, data in objects.items():
        (genuine / name).write_bytes(data)
    ok = run_verify(str(genuine), "--public-key", str(signing_key), "--ledger", db_url=snapshot)
    assert ok.returncode == 0 and "snapshot OK: 2026-10" in ok.stdout, ok.stdout + ok.stderr

    # a line changed, the manifest rebuilt and signed again with a key of the forger's own
    forged = tmp_path / "forged" / "2026-10"
    forged.mkdir(parents=True)
    files = {}
    for name, data in objects.items():
        if name not in (MANIFEST, SIGNATURE, PUBLIC_KEY):
            (forged / name).write_bytes(data.replace(b"CTR-A:2026-10:v1,2,", b"CTR-A:2026-10:v1,2,X")
                                        if name == "invoice_lines.csv" else data)
            files[name] = forged / name
    manifest = json.loads(objects[MANIFEST])
    for name, data in build_snapshot("2026-10", manifest["created_at"], files, Ed25519PrivateKey.generate()).items():
        if isinstance(data, bytes):
            (forged / name).write_bytes(data)
    own_key = run_verify(str(forged), "--public-key", str(forged / PUBLIC_KEY))
    assert own_key.returncode == 0  # its own key proves only that it is whole ...
    assert "note: --public-key is the snapshot's own public_key.pem" in own_key.stdout  # ... and says so
    ledger = run_verify(str(forged), "--public-key", str(forged / PUBLIC_KEY), "--ledger", db_url=snapshot)
    assert ledger.returncode == 1
    assert "FAIL manifest.json: SHA-256" in ledger.stdout and "is not a snapshot of 2026-10 the ledger recorded" \
        in ledger.stdout
    published = run_verify(str(forged), "--public-key", str(signing_key))
    assert published.returncode == 1 and "FAIL manifest.json: the signature does not match" in published.stdout

    # October's genuine snapshot where November's should be
    misplaced = tmp_path / "2026-11"
    shutil.copytree(genuine, misplaced)
    moved = run_verify(str(misplaced), "--public-key", str(signing_key))
    assert moved.returncode == 1 and "FAIL manifest.json: this is the snapshot of 2026-10, not of 2026-11" in moved.stdout
    asked = run_verify(str(genuine), "--public-key", str(signing_key), "--month", "2026-11")
    assert asked.returncode == 1 and "not of 2026-11" in asked.stdout

    # a file beside the signed ones
    (genuine / "contract_discounts_2.csv").write_text("contract_id,discount_id\nCTR-A,FREE\n")
    padded = run_verify(str(genuine), "--public-key", str(signing_key))
    assert padded.returncode == 1
    assert "FAIL contract_discounts_2.csv: not in the manifest (added after signing?)" in padded.stdout


def test_the_snapshot_holds_what_earlier_months_consumed_of_prepaid_credit(october, tmp_path):
    """A grant's balance is the grant less what earlier months consumed; those months' invoices are
    not in this month's files, so the credit applied could not be proven from the snapshot alone."""
    from billing_pipeline.steps.audit import export_month

    with psycopg.connect(october) as conn:
        conn.execute("""INSERT INTO credit_grants (grant_id, contract_id, amount, currency, granted_on, description)
                        VALUES ('G1', 'CTR-C', 1000, 'EUR', '2026-08-15', 'Prepaid top-up')""")
        for version, status, credits in ((1, "ISSUED", "400.00"), (2, "CORRECTED", "380.00")):  # the latest counts
            conn.execute("""INSERT INTO invoices (invoice_id, contract_id, org_id, period_start, period_end, version,
                                status, currency, subtotal, tax_rate, tax, credits_applied, total)
                            VALUES (%s, 'CTR-C', 'org_c', '2026-09-01', '2026-10-01', %s, 'DRAFT', 'EUR', 500, 0, 0,
                                    %s::numeric, 500 - %s::numeric)""", (f"CTR-C:2026-09:v{version}", version, credits, credits))
            conn.execute("UPDATE invoices SET status = %s WHERE invoice_id = %s", (status, f"CTR-C:2026-09:v{version}"))
    files = export_month(october, Period.parse_month("2026-10"), tmp_path)
    assert files["credit_consumed_before.csv"].read_text().splitlines() == [
        "contract_id,period_start,invoice_id,version,status,currency,credits_applied",
        "CTR-C,2026-09-01,CTR-C:2026-09:v2,2,CORRECTED,EUR,380.0000"]


def test_bad_key_and_unlocked_bucket_fail_clearly(monkeypatch, s3_endpoint):
    monkeypatch.setenv("BILLING_AUDIT_SIGNING_KEY", "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----")
    with pytest.raises(ConfigError) as err:
        load_signing_key()
    assert "is not a PEM private key" in str(err.value) and "not a key" not in str(err.value)
    monkeypatch.delenv("BILLING_AUDIT_SIGNING_KEY")
    with pytest.raises(ConfigError, match="no audit signing key"):
        load_signing_key()
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="plain")
    with pytest.raises(AuditStorageError, match="has no Object Lock|ObjectLockConfigurationNotFound"):
        AuditBucket("plain", s3_endpoint).upload("x", {"a": b"1"})


def test_s3_outage_is_one_clear_error():
    from billing_pipeline.errors import StoreUnavailableError

    with pytest.raises(StoreUnavailableError, match="S3 at http://127.0.0.1:1 unreachable during GetObjectLockConfiguration"):
        AuditBucket("audit", "http://127.0.0.1:1").upload("x", {"a": b"1"})


def test_the_snapshot_check_is_green(snapshot, instance):
    key = dg.AssetCheckKey(dg.AssetKey("audit_snapshot"), "snapshot_verifies")
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    assert record.event.dagster_event.event_specific_data.passed is True


def test_upload_keeps_what_it_read_back_of_its_own_version(s3_endpoint, tmp_path):
    # publish_snapshot verifies this copy instead of downloading the prefix again: it must be the
    # version this upload stored, byte for byte, even once a newer version lies under the prefix
    bucket = AuditBucket("read-back", s3_endpoint)
    bucket.create()
    exported = tmp_path / "usage_rollups.csv"
    exported.write_bytes(b"day,org_id\n2026-10-01,org_1\n" * 1000)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    versions = bucket.upload("snap", {"usage_rollups.csv": exported, "manifest.json": b'{"v":1}'}, read_back_into=first)
    later = bucket.upload("snap", {"manifest.json": b'{"v":2}'}, read_back_into=second)
    assert sorted(p.name for p in first.iterdir()) == ["manifest.json", "usage_rollups.csv"]
    assert (first / "usage_rollups.csv").read_bytes() == exported.read_bytes()
    assert (first / "manifest.json").read_bytes() == b'{"v":1}'
    assert (second / "manifest.json").read_bytes() == b'{"v":2}'
    assert later["manifest.json"] != versions["manifest.json"]


def test_an_export_changed_after_it_was_hashed_is_not_stored(s3_endpoint, tmp_path):
    # the manifest's digest goes up as the object's checksum: a file changed on disk between its
    # hashing and its upload is refused by S3 (or, were a store not to check, found on read-back)
    bucket = AuditBucket("hashed-once", s3_endpoint)
    bucket.create()
    exported = tmp_path / "usage_rollups.csv"
    exported.write_bytes(b"day,org_id\n2026-10-01,org_1\n")
    hashed = hashlib.sha256(exported.read_bytes()).hexdigest()
    exported.write_bytes(b"day,org_id\n2026-10-01,org_2\n")
    with pytest.raises(AuditStorageError, match="snap/usage_rollups.csv"):
        bucket.upload("snap", {"usage_rollups.csv": exported}, sha256={"usage_rollups.csv": hashed})
    assert bucket.upload("snap", {"usage_rollups.csv": exported}) != {}  # hashed here: stored


def test_the_rollups_exported_beside_the_other_files_see_the_same_picture(db_url, tmp_path):
    # usage_rollups.csv is COPY'd on a second connection while the other files are: it imports the
    # export's snapshot, so a rollup re-run committing meanwhile is in neither or in both
    from datetime import date

    from billing_pipeline.steps.audit import _copy_out_in_snapshot
    from billing_pipeline.steps.usage_tables import clear_rollups
    from billing_pipeline.stores.postgres import transaction

    insert = "INSERT INTO usage_rollups VALUES ('2026-10-05', %s, 'prj', 'eth-mainnet', 7, 6, 1, 700)"
    with transaction(db_url) as conn:
        clear_rollups(conn, date(2026, 10, 1), date(2026, 11, 1))
        conn.execute(insert, ("org_before",))
    with psycopg.connect(db_url) as exporter:
        exporter.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        snapshot = exporter.execute("SELECT pg_export_snapshot()").fetchone()[0]
        with transaction(db_url) as conn:  # committed after the picture was taken
            conn.execute(insert, ("org_after",))
        _copy_out_in_snapshot(db_url, snapshot, "usage_rollups.csv", Period.parse_month("2026-10"),
                              tmp_path / "usage_rollups.csv")
    assert (tmp_path / "usage_rollups.csv").read_text().splitlines() == [
        "day,org_id,project_id,chain,requests,successful_requests,error_requests,bytes_out",
        "2026-10-05,org_before,prj,eth-mainnet,7,6,1,700"]


def test_two_snapshots_of_the_month_at_once_leave_the_set_the_ledger_recorded(snapshot, s3_endpoint, signing_key,
                                                                                tmp_path):
    """Uploaded at once, the prefix's latest versions were a mix of both runs, and the auditor's
    `--ledger` check named a file whose current version the ledger never recorded (3 of 3)."""
    from at_once import at_once, failures
    from billing_pipeline.steps.audit import publish_snapshot

    bucket, key = AuditBucket("audit-test", s3_endpoint), load_signing_key()
    for round_ in range(3):
        workdirs = [tmp_path / f"{round_}-{run}" for run in "ab"]
        for workdir in workdirs:
            workdir.mkdir()
        assert failures(at_once(*[lambda w=w: publish_snapshot(snapshot, Period.parse_month("2026-10"), key, bucket, w)
                                  for w in workdirs])) == []
        checked = run_verify(f"s3://audit-test/{PREFIX}", "--public-key", str(signing_key), "--ledger",
                             db_url=snapshot, endpoint=s3_endpoint)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_auditor_recomputes_every_rated_charge_from_the_snapshot_alone(snapshot, s3_endpoint):
    """The snapshot held the rollups' counters but not the meters plans price (compute units), nor
    the plans, nor the contracts' terms (timezone, overridden price, commitment): an auditor could
    check hashes, not charges. From its files alone (and the product's open rating code), every
    rated charge of the month is recomputed to the digit, and each plan's hash checks."""
    import csv
    import io
    import json
    from datetime import datetime
    from decimal import Decimal

    from billing_pipeline.domain.meters import load_meters
    from billing_pipeline.domain.plans import Plan
    from billing_pipeline.domain.rating import rate_contract_month
    from billing_pipeline.domain.terms import ContractTerms

    objects, _ = AuditBucket("audit-test", s3_endpoint).download(PREFIX)

    def rows(name):
        return list(csv.DictReader(io.StringIO(objects[name].decode())))

    def decimal(text):
        return Decimal(text) if text else None

    plans = {}
    for r in rows("plans.csv"):
        canonical = json.dumps(json.loads(r["definition"]), sort_keys=True, separators=(",", ":"))
        assert hashlib.sha256(canonical.encode()).hexdigest() == r["definition_sha256"]
        plans[r["plan_id"]] = Plan.model_validate_json(r["definition"])
    additive = [m for m in load_meters() if m.additive]
    usage_rows = [r for r in rows("usage_rollups.csv") if "2026-10-01" <= r["day"] < "2026-11-01"]
    assert {r["day"] for r in rows("usage_rollups.csv")} >= {"2026-09-30", "2026-11-01"}  # the edge days too
    period = Period.parse_month("2026-10")
    recomputed = {}
    for c in rows("contracts.csv"):
        assert c["timezone"] == "UTC" and c["auto_renew"] == "f"  # the fixture's: its month is its UTC days
        terms = ContractTerms(c["contract_id"], c["org_id"], c["region"], c["currency"].strip(), plans[c["plan_id"]],
                              datetime.fromisoformat(c["start_at"]), None, c["timezone"], decimal(c["price_fixed"]),
                              decimal(c["minimum_commitment"]))
        usage = {}
        for r in (r for r in usage_rows if r["org_id"] == c["org_id"]):
            for m in additive:
                usage[(m.slug, r["chain"])] = usage.get((m.slug, r["chain"]), 0) + int(r[m.column])
        for charge in rate_contract_month(terms, usage, period).charges:
            recomputed[charge.charge_id] = (charge.amount, charge.plan_id)
    rated = {r["charge_id"]: (Decimal(r["amount"]), r["plan_id"]) for r in rows("rated_charges.csv")}
    assert recomputed == rated and len(rated) == 9
    # and whom each invoice was issued to, as a tax authority asks
    buyers = {r["org_id"]: (r["legal_name"], r["tax_id"]) for r in rows("customers.csv")}
    assert {r["org_id"] for r in rows("invoices.csv")} <= set(buyers) and buyers["org_b"] == ("Beta A.S.", "1234567890")
    # and each Turkish invoice's KDV, as the e-invoice computes it: per line, on the line less its
    # share of the discounts, rounded half-up (a discount line carries none: its lines carry it)
    from billing_pipeline.domain.money import round_money
    kdv = {}
    for line in (x for x in rows("invoice_lines.csv") if Decimal(x["amount"]) >= 0):
        kdv.setdefault(line["invoice_id"], []).append(Decimal(line["amount"]) - (decimal(line["discount_share"]) or 0))
    turkish = {r["invoice_id"]: (Decimal(r["tax"]), Decimal(r["tax_rate"])) for r in rows("invoices.csv")
               if r["currency"].strip() == "TRY" and r["kind"] == "INVOICE"}
    assert {i: sum(round_money(net * rate, "TRY") for net in kdv[i]) for i, (_, rate) in turkish.items()} == {
        i: tax for i, (tax, _) in turkish.items()} == {"CTR-B:2026-10:v1": Decimal("5000.0000")}
