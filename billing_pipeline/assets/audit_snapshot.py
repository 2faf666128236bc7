"""audit_snapshot: the month's signed, immutable export (S3 Object Lock), recorded in the ledger."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import dagster as dg

from .. import settings
from ..domain.audit import MANIFEST, PUBLIC_KEY, blob_size
from ..domain.periods import Period
from ..resources import BillingDatabase
from ..resources.audit_storage import AuditStorageResource, embedded_signing_key, published_public_key
from ..steps.audit import SIGNING_KEY_ENV, SIGNING_KEY_FILE_ENV, load_signing_key, publish_snapshot
from .invoice_corrections import invoice_corrections
from .invoice_drafts import invoice_drafts
from .partitions import monthly_partitions
from .reporting import failures_as_messages, markdown_table


@dg.asset(
    # after the corrections: a dispute backfill's snapshot holds its credit notes and supplementary invoices
    deps=[invoice_drafts, invoice_corrections],
    partitions_def=monthly_partitions,
    group_name="proof",
    owners=["team:billing-data"],
    kinds={"s3", "postgres"},
    check_specs=[dg.AssetCheckSpec("snapshot_verifies", asset="audit_snapshot",
                                   description="The stored snapshot's signature, file hashes and Merkle root check out.")],
)
def audit_snapshot(context: dg.AssetExecutionContext, billing_db: BillingDatabase,
                   audit_storage: AuditStorageResource) -> dg.MaterializeResult:
    """Usage rollups, source totals, rated charges, FX rates, invoices and lines, contract document
    hashes: CSV files, a manifest of their SHA-256 and a Merkle root over the invoice lines, signed
    with Ed25519, uploaded with Object Lock (COMPLIANCE), read back, then the manifest hash and every
    object's version id appended to the hash-chained ledger."""
    period = Period.parse_month(context.partition_key)
    prefix = f"snapshots/{period.label}"
    with failures_as_messages():
        configured = os.environ.get(SIGNING_KEY_ENV) or os.environ.get(SIGNING_KEY_FILE_ENV)
        key = load_signing_key() if configured or not audit_storage.embedded else embedded_signing_key()
        db_url = billing_db.get_url()
        with tempfile.TemporaryDirectory(prefix="audit-snapshot-") as workdir, \
                audit_storage.open_bucket() as bucket:
            published = publish_snapshot(db_url, period, key, bucket, Path(workdir))
            location = published.location
            if audit_storage.embedded:  # the ephemeral bucket goes with the run: keep a copy to verify
                copy = settings.state_dir() / "audit" / prefix
                shutil.rmtree(copy, ignore_errors=True)  # a file of an earlier snapshot would not be in this one
                copy.mkdir(parents=True)
                published_public_key().write_bytes(published.objects[PUBLIC_KEY])
                for name, data in published.objects.items():
                    if isinstance(data, Path):
                        shutil.copyfile(data, copy / name)
                    else:
                        (copy / name).write_bytes(data)
                location = f"{location} (embedded moto, not kept; copy in {copy})"
            manifest = json.loads(published.objects[MANIFEST])
            sizes = {name: blob_size(data) for name, data in published.objects.items()}
    check, versions = published.check, published.versions
    return dg.MaterializeResult(check_results=[dg.AssetCheckResult(
        check_name="snapshot_verifies", passed=check.ok, metadata={"problems": "; ".join(check.problems) or "none"},
    )], metadata={
        "location": location,
        "manifest_sha256": published.manifest_sha256,
        "merkle_root": manifest["merkle_root"],
        "invoice_lines": manifest["invoice_lines"],
        "objects": markdown_table(["object", "bytes", "version id"],
                                  [(name, size, versions[name]) for name, size in sorted(sizes.items())]),
    })
