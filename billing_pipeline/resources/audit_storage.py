"""Where signed audit snapshots go: an S3-compatible bucket with Object Lock (BILLING_AUDIT_S3_*).

With no endpoint configured (the embedded default) each run starts a moto S3 server on loopback
and signs with a key kept in the state directory: fine for the demo, not a place to keep
records. Production sets BILLING_AUDIT_S3_ENDPOINT/BUCKET and a signing key.
"""

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import dagster as dg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import settings
from ..stores.audit_bucket import AuditBucket


class AuditStorageResource(dg.ConfigurableResource):
    endpoint_url: str | None = None
    bucket: str = "billing-audit"
    retention_years: int = 10
    access_key: str | None = None
    secret_key: str | None = None
    timeout_seconds: float = 60.0  # how long one S3 request may take before it is retried

    @property
    def embedded(self) -> bool:
        return not self.endpoint_url

    @contextmanager
    def open_bucket(self) -> Iterator[AuditBucket]:
        if not self.embedded:
            yield AuditBucket(self.bucket, self.endpoint_url, self.retention_years, access_key=self.access_key,
                              secret_key=self.secret_key, timeout_seconds=self.timeout_seconds)
            return
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the embedded server's access log is noise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            bucket = AuditBucket(self.bucket, f"http://{host}:{port}", self.retention_years,
                                 access_key="embedded", secret_key="embedded")
            bucket.create()
            yield bucket
        finally:
            server.stop()


def published_public_key() -> Path:
    """Where the embedded default publishes the public key its snapshots verify with: outside any
    snapshot, as a key is published apart from what it signs (anyone who rewrites a snapshot can
    sign it again and put their own key beside it)."""
    return settings.state_dir() / "audit" / "public_key.pem"


def embedded_signing_key() -> Ed25519PrivateKey:
    """The demo's signing key, created once under the state directory."""
    path = settings.state_dir() / "audit_signing_key.pem"
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)
    return serialization.load_pem_private_key(path.read_bytes(), password=None)
