"""Audit snapshots in S3-compatible storage (AWS S3, Backblaze B2, a moto server): versioned,
Object Lock in COMPLIANCE mode, every upload read back and checked before it counts."""

from __future__ import annotations

import base64
import hashlib
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO, Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, FlexibleChecksumError

from ..domain.audit import Blob, sha256_hex
from ..errors import BillingError, StoreUnavailableError


_CHUNK = 1 << 20


@contextmanager
def _opened(data: Blob) -> Iterator[BinaryIO | bytes]:
    if isinstance(data, Path):
        with data.open("rb") as f:
            yield f
    else:
        yield data


class AuditStorageError(BillingError):
    pass


class AuditBucket:
    def __init__(self, bucket: str, endpoint_url: str | None = None, retention_years: int = 10,
                 region: str = "us-east-1", access_key: str | None = None, secret_key: str | None = None,
                 timeout_seconds: float = 60.0):
        self.bucket, self.retention_years = bucket, retention_years
        self.endpoint_url = endpoint_url
        self._s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, aws_access_key_id=access_key,
                                aws_secret_access_key=secret_key,
                                config=Config(retries={"max_attempts": 5, "mode": "standard"},
                                              connect_timeout=min(10.0, timeout_seconds), read_timeout=timeout_seconds))

    def _call(self, what: str, fn, **kwargs):
        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            message = exc.response.get("Error", {}).get("Message", "")
            meta = exc.response.get("ResponseMetadata", {})
            status = meta.get("HTTPStatusCode") or 0
            if status >= 500 or status == 429:  # a throttled or failing server, not a refusal: worth a re-run
                raise StoreUnavailableError(
                    f"S3 at {self.endpoint_url or 'AWS'} unavailable during {what}: HTTP {status} {code}: {message} "
                    f"(after {meta.get('RetryAttempts', 0) + 1} attempts)") from None
            raise AuditStorageError(f"S3 {what} on bucket {self.bucket!r} refused: {code}: {message}") from None
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

    def upload(self, prefix: str, objects: dict[str, Blob], read_back_into: Path | None = None,
               sha256: dict[str, str] | None = None) -> dict[str, str]:
        """Put every object locked in COMPLIANCE mode, read each back, and return name -> version id
        only if every byte came back as sent. Objects in files are streamed, never loaded whole.
        With ``read_back_into``, what was read back is also written there (one file per object),
        for a caller that verifies the stored copy: the stored version, not the latest under the
        prefix, and without reading it from the bucket a second time (half a gigabyte at 10k
        contracts). ``sha256``: hex digests the caller already holds (a snapshot's manifest lists
        its files'); each object is hashed here once at most, the digest sent as the object's
        checksum (S3 refuses a body that does not match it) and compared with what comes back.
        Hashing half a gigabyte takes over a second: it was hashed four times on its way up."""
        self.check_locked()
        until = datetime.now(timezone.utc) + timedelta(days=365 * self.retention_years + self.retention_years // 4)
        sent = {name: (sha256 or {}).get(name) or sha256_hex(data) for name, data in objects.items()}
        versions = {}
        for name, data in sorted(objects.items()):
            with _opened(data) as body:
                put = self._call("PutObject", self._s3.put_object, Bucket=self.bucket, Key=f"{prefix}/{name}",
                                 Body=body, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until,
                                 ChecksumAlgorithm="SHA256",  # S3 takes no Object Lock upload without it
                                 ChecksumSHA256=base64.b64encode(bytes.fromhex(sent[name])).decode())
            versions[name] = put["VersionId"]
        for name, data in objects.items():
            got = self._call("GetObject", self._s3.get_object, Bucket=self.bucket, Key=f"{prefix}/{name}",
                             VersionId=versions[name])
            digest = hashlib.sha256()
            with (read_back_into / name).open("wb") if read_back_into else nullcontext() as copy:
                try:
                    for chunk in got["Body"].iter_chunks(_CHUNK):
                        digest.update(chunk)
                        if copy:
                            copy.write(chunk)
                except FlexibleChecksumError:  # botocore checks the body against the stored checksum
                    raise AuditStorageError(f"{prefix}/{name}: the stored object does not match the checksum it "
                                            "was stored with") from None
            if digest.hexdigest() != sent[name]:
                raise AuditStorageError(f"{prefix}/{name}: the stored object differs from what was uploaded")
            if got.get("ObjectLockMode") != "COMPLIANCE":
                raise AuditStorageError(f"{prefix}/{name}: stored without a COMPLIANCE lock")
        return versions

    def put(self, key: str, data: bytes) -> str:
        """One locked object (an invoice PDF, an appendix), read back; returns s3://bucket/key?versionId=..."""
        prefix, _, name = key.rpartition("/")
        version = self.upload(prefix, {name: data})[name]
        return f"s3://{self.bucket}/{key}?versionId={version}"

    def download(self, prefix: str, directory: Path | None = None) -> tuple[dict[str, Blob], dict[str, str]]:
        """The latest version of every object under the prefix, and their version ids: in memory,
        or streamed into files in ``directory`` (for snapshots too big to hold)."""
        listing = self._call("ListObjectsV2", self._s3.list_objects_v2, Bucket=self.bucket, Prefix=f"{prefix}/")
        objects: dict[str, Blob] = {}
        versions = {}
        for item in listing.get("Contents", []):
            got = self._call("GetObject", self._s3.get_object, Bucket=self.bucket, Key=item["Key"])
            name = item["Key"][len(prefix) + 1:]
            versions[name] = got.get("VersionId", "")
            if directory is None:
                objects[name] = got["Body"].read()
                continue
            objects[name] = directory / name
            with objects[name].open("wb") as out:
                for chunk in got["Body"].iter_chunks(_CHUNK):
                    out.write(chunk)
        return objects, versions

    def delete_version(self, prefix: str, name: str, version_id: str) -> None:
        self._call("DeleteObject", self._s3.delete_object, Bucket=self.bucket, Key=f"{prefix}/{name}",
                   VersionId=version_id)
