"""A scanner for secret values: every place a full close writes to is read back and searched for
each configured secret, raw and in the encodings a secret takes on its way through HTTP, JSON and
logs (URL-encoded, JSON-escaped, base64 at any alignment, so also inside a Basic auth header, hex).

A hit names the secret, the encoding and where it was found; ``seen`` counts what was read, per
kind of place (items and bytes), so a report can say exactly what was scanned.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
import re
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

import boto3
import dagster as dg
import psycopg
from dagster._serdes import serialize_value


def _base64_inner(raw: bytes, alternative: bool) -> list[bytes]:
    """The part of base64 that depends on ``raw`` alone, for each of its 3 possible alignments in a
    longer encoded string (e.g. the password inside base64("user:password"))."""
    forms = []
    for pad in range(3):
        encoded = (base64.urlsafe_b64encode if alternative else base64.b64encode)(b"\0" * pad + raw)
        start, end = -(-8 * pad // 6), 8 * (pad + len(raw)) // 6  # characters made of secret bits only
        forms.append(encoded[start:end])
    return forms


def encodings(value: str | bytes) -> dict[str, bytes]:
    raw = value if isinstance(value, bytes) else value.encode()
    text = raw.decode("latin-1")
    forms = {"raw": raw, "url-encoded": quote(text, safe="").encode(), "form-encoded": quote_plus(text).encode(),
             "json-escaped": json.dumps(text)[1:-1].encode(), "hex": raw.hex().encode(),
             "HEX": raw.hex().upper().encode()}
    for i, form in enumerate(_base64_inner(raw, alternative=False)):
        forms[f"base64@{i}"] = form
    for i, form in enumerate(_base64_inner(raw, alternative=True)):
        forms[f"base64url@{i}"] = form
    unique: dict[bytes, str] = {}
    for name, form in forms.items():
        unique.setdefault(form, name)
    return {name: form for form, name in unique.items()}


@dataclass(frozen=True)
class Hit:
    secret: str
    encoding: str
    where: str


@dataclass
class SecretScanner:
    secrets: dict[str, str | bytes]
    hits: list[Hit] = field(default_factory=list)
    seen: Counter = field(default_factory=Counter)  # "<kind> items" / "<kind> bytes"

    def __post_init__(self):
        self._names: dict[bytes, tuple[str, str]] = {}
        for secret, value in self.secrets.items():
            for encoding, form in encodings(value).items():
                assert len(form) >= 12, f"{secret}: its {encoding} form {form!r} is too short to search for"
                self._names.setdefault(form, (secret, encoding))
        forms = sorted(self._names, key=len, reverse=True)
        self._pattern = re.compile(b"|".join(re.escape(f) for f in forms))

    def text(self, kind: str, where: str, data: str | bytes) -> None:
        data = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        self.seen[f"{kind} items"] += 1
        self.seen[f"{kind} bytes"] += len(data)
        for label, blob in [("", data), *_inflated(data)]:
            for match in self._pattern.finditer(blob):
                self.hits.append(Hit(*self._names[match.group()], where + label))

    def exception(self, where: str, exc: BaseException) -> None:
        """str, repr, the formatted traceback and every chained cause or context."""
        seen = set()
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            self.text("exception", where, f"{exc}\n{exc!r}\n" + "".join(traceback.format_exception(exc)))
            exc = exc.__cause__ or exc.__context__

    def database(self, url: str, skip: set[tuple[str, str]] = frozenset()) -> None:
        """Every column of every table (``skip``: (table, column) pairs that are credential stores)."""
        with psycopg.connect(url) as conn:
            tables = conn.execute("""SELECT table_schema, table_name FROM information_schema.tables
                                     WHERE table_type = 'BASE TABLE'
                                       AND table_schema NOT IN ('pg_catalog', 'information_schema')
                                     ORDER BY 1, 2""").fetchall()
            for schema, table in tables:
                cur = conn.execute(f'SELECT * FROM "{schema}"."{table}"')
                columns = [c.name for c in cur.description]
                rows = cur.fetchall()
                self.seen[f"{_db_kind(url)} tables"] += 1
                self.seen[f"{_db_kind(url)} rows"] += len(rows)
                for i, column in enumerate(columns):
                    if (table, column) in skip:
                        continue
                    values = []
                    for row in rows:
                        values.append(_as_bytes(row[i]))
                        values.extend(blob for _, blob in _inflated(values[-1]))  # e.g. Dagster's snapshots
                    self.text(_db_kind(url), f"{schema}.{table}.{column}", b"\n".join(values))

    def bucket_objects(self, endpoint: str, access_key: str, secret_key: str) -> None:
        """Every version of every object in every bucket."""
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=access_key,
                          aws_secret_access_key=secret_key)
        for bucket in s3.list_buckets()["Buckets"]:
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket["Name"]):
                for version in page.get("Versions", []):
                    body = s3.get_object(Bucket=bucket["Name"], Key=version["Key"],
                                         VersionId=version["VersionId"])["Body"].read()
                    self.text("s3 object", f"s3://{bucket['Name']}/{version['Key']}?versionId={version['VersionId']}",
                              body)

    def files(self, kind: str, root: Path, skip_names: set[str] = frozenset(), newer_than: float = 0.0) -> None:
        for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
            try:  # another process's dbt run may remove its files meanwhile
                if path.name in skip_names or path.stat().st_mtime < newer_than:
                    continue
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            self.text(kind, str(path), data)

    def dagster_events(self, instance: dg.DagsterInstance) -> None:
        """Every event of every run, as stored (messages, metadata, check results, errors with their
        causes and stack traces), and every run record with its config and tags."""
        for run in instance.get_runs():
            self.text("dagster run", f"run {run.run_id}", serialize_value(run))
            for entry in instance.all_logs(run.run_id):
                self.text("dagster event", f"run {run.run_id} {entry.dagster_event_type or 'log'}",
                          serialize_value(entry))


# The stream's data runs to "endstream"; the end-of-line before that keyword is left on it and
# ignored as data after the end of the compressed stream, since the data itself may end in b"\r"
# (a random Adler-32 byte: stripping "\r?\n" there lost one PDF in 256).
_PDF_STREAM = re.compile(rb"stream\r?\n(.*?)endstream", re.DOTALL)


def _inflated(data: bytes) -> list[tuple[str, bytes]]:
    """What compression hides: zlib or gzip data (Dagster stores its snapshots zlib-compressed)
    and a PDF's Flate streams (fpdf2 compresses page text)."""
    candidates = _PDF_STREAM.findall(data) if data.startswith(b"%PDF") else [data]
    out = []
    for i, blob in enumerate(candidates):
        try:
            if blob[:2] == b"\x1f\x8b":
                out.append((f" (gzip {i})", gzip.decompress(blob)))
            elif blob[:1] == b"\x78":
                inflater = zlib.decompressobj()  # keeps what follows the stream in unused_data
                inflated = inflater.decompress(blob)
                if inflater.eof:
                    out.append((f" (zlib {i})", inflated))
        except (OSError, EOFError, zlib.error):
            pass
    return out


def _db_kind(url: str) -> str:
    return "dagster db" if url.rstrip("/").endswith("_dagster") else "billing db"


def _as_bytes(value) -> bytes:
    if value is None:
        return b""
    if isinstance(value, (bytes, memoryview)):
        return bytes(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str).encode()
    return str(value).encode()


class RecordingHandler(logging.Handler):
    """Keeps every log record formatted as a log file would hold it, exception included."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def state_files_except_key(state_dir: Path) -> set[str]:
    """The embedded signing key file is where a key is meant to be; nothing else may hold one."""
    return {"audit_signing_key.pem"} if (Path(state_dir) / "audit_signing_key.pem").exists() else set()


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("BILLING_", "DAGSTER_", "AWS_"))}
