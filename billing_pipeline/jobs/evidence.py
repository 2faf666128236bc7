"""export_evidence: proof of delivery for an enterprise dispute, launched from the UI with a
contract and a date range; the signed bundle is stored locked in S3 beside the audit snapshots."""

import os
from datetime import date

import dagster as dg

from .. import settings
from ..resources import BillingDatabase, ClickHouseResource
from ..resources.audit_storage import AuditStorageResource, embedded_signing_key
from ..steps.audit import SIGNING_KEY_ENV, SIGNING_KEY_FILE_ENV, load_signing_key
from ..steps.evidence import export_evidence


class EvidenceRequest(dg.Config):
    contract_id: str
    from_date: str  # YYYY-MM-DD, first day included (days of the contract's timezone, as its invoices bill)
    to_date: str  # YYYY-MM-DD, first day not included


@dg.op(description="Every request of the contract's org in the range (deduplicated as billed), with its timestamp and "
                   "source address, plus daily totals; signed (Ed25519) and stored with Object Lock.")
def export_contract_evidence(context: dg.OpExecutionContext, config: EvidenceRequest, clickhouse: ClickHouseResource,
                             billing_db: BillingDatabase, audit_storage: AuditStorageResource) -> None:
    configured = os.environ.get(SIGNING_KEY_ENV) or os.environ.get(SIGNING_KEY_FILE_ENV)
    key = load_signing_key() if configured or not audit_storage.embedded else embedded_signing_key()
    evidence = export_evidence(clickhouse.get_store(), billing_db.get_url(), config.contract_id,
                               date.fromisoformat(config.from_date), date.fromisoformat(config.to_date), key)
    with audit_storage.open_bucket() as bucket:
        versions = bucket.upload(evidence.prefix, evidence.objects)
        location = f"s3://{bucket.bucket}/{evidence.prefix}"
    if audit_storage.embedded:  # the ephemeral bucket goes with the run: keep a copy to hand over
        copy = settings.state_dir() / "audit" / evidence.prefix
        copy.mkdir(parents=True, exist_ok=True)
        for name, data in evidence.objects.items():
            (copy / name).write_bytes(data)
        location = f"{location} (embedded moto, not kept; copy in {copy})"
    context.log.info(f"evidence for {config.contract_id}: {evidence.requests} requests billed and "
                     f"{evidence.unbilled_rows} rows served but not billed, at {location}")
    context.log_event(dg.AssetObservation(asset_key="requests_raw", metadata={
        "evidence_for": config.contract_id, "range": f"{config.from_date}..{config.to_date}",
        "requests": evidence.requests, "unbilled_rows": evidence.unbilled_rows, "location": location,
        "objects": dg.MetadataValue.json({name: versions[name] for name in sorted(versions)})}))


@dg.job(description="Proof of delivery for a disputed contract and date range (launch with config).")
def export_evidence_job():
    export_contract_evidence()
