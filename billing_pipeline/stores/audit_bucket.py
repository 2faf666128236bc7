"""Audit snapshots in S3-compatible storage (AWS S3, Backblaze B2, a moto server): versioned,
Object Lock in COMPLIANCE mode, every upload read back and checked before it counts."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import BillingError, StoreUnavailableError


class AuditStorageError(BillingError):
    pass


class AuditBucket:
    def __init__(self, bucket: str, endpoint_url: str | None = None, retention_years: int = 10,
                 region: str = "us-east-1", access_key: str | None = None, secret_key: str | None = None):
        self.bucket, self.retention_years = bucket, retention_years
        self.endpoint_url = endpoint_url
        self._s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, aws_access_key_id=access_key,
                                aws_secret_access_key=secret_key,
                                config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10))

    def _call(self, what: str, fn, **kwargs):
        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            raise AuditStorageError(f"S3 {what} on bucket {self.bucket!r} refused: {code}: "
                                    f"{exc.response.get('Error', {}).get('Message', '')}") from None
        except BotoCoreError as exc:
            raise StoreUnavailableError(f"S3 at {self.endpoint_url or 'AWS'} unreachable during {what}: {exc}") from None

    def create(self) -> None:
        """Create the bucket with Object Lock (which also turns versioning on), if it is missing."""
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            self._call("CreateBucket", self._s3.create_bucket, Bucket=self.bucket, ObjectLockEnabledForBucket=True)

    def check_locked(self) -> None:
        config = self._call("GetObjectLockConfiguration", self._s3.get_object_lock_configuration, Bucket=self.bucket)
        if config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise AuditStorageError(f"bucket {self.bucket!r} has no Object Lock; snapshots need an immutable bucket")
        versioning = self._call("GetBucketVersioning", self._s3.get_bucket_versioning, Bucket=self.bucket)
        if versioning.get("Status") != "Enabled":
            raise AuditStorageError(f"bucket {self.bucket!r} is not versioned")

    def upload(self, prefix: str, objects: dict[str, bytes]) -> dict[str, str]:
        """Put every object locked in COMPLIANCE mode, read each back, and return name -> version id
        only if every byte came back as sent."""
        self.check_locked()
        until = datetime.now(timezone.utc) + timedelta(days=365 * self.retention_years + self.retention_years // 4)
        versions = {}
        for name, data in sorted(objects.items()):
            put = self._call("PutObject", self._s3.put_object, Bucket=self.bucket, Key=f"{prefix}/{name}", Body=data,
                             ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until, ChecksumAlgorithm="SHA256")
            versions[name] = put["VersionId"]
        for name, data in objects.items():
            got = self._call("GetObject", self._s3.get_object, Bucket=self.bucket, Key=f"{prefix}/{name}",
                             VersionId=versions[name])
            if hashlib.sha256(got["Body"].read()).digest() != hashlib.sha256(data).digest():
                raise AuditStorageError(f"{prefix}/{name}: the stored object differs from what was uploaded")
            if got.get("ObjectLockMode") != "COMPLIANCE":
                raise AuditStorageError(f"{prefix}/{name}: stored without a COMPLIANCE lock")
        return versions

    def put(self, key: str, data: bytes) -> str:
        """One locked object (an invoice PDF, an appendix), read back; returns s3://bucket/key?versionId=..."""
        prefix, _, name = key.rpartition("/")
        version = self.upload(prefix, {name: data})[name]
        return f"s3://{self.bucket}/{key}?versionId={version}"

    def download(self, prefix: str) -> tuple[dict[str, bytes], dict[str, str]]:
        """The latest version of every object under the prefix, and their version ids."""
        listing = self._call("ListObjectsV2", self._s3.list_objects_v2, Bucket=self.bucket, Prefix=f"{prefix}/")
        objects, versions = {}, {}
        for item in listing.get("Contents", []):
            got = self._call("GetObject", self._s3.get_object, Bucket=self.bucket, Key=item["Key"])
            name = item["Key"][len(prefix) + 1:]
            objects[name], versions[name] = got["Body"].read(), got.get("VersionId", "")
        return objects, versions

    def delete_version(self, prefix: str, name: str, version_id: str) -> None:
        self._call("DeleteObject", self._s3.delete_object, Bucket=self.bucket, Key=f"{prefix}/{name}",
                   VersionId=version_id)
