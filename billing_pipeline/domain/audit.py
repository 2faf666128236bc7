"""Signed monthly audit snapshots: a manifest of file hashes and an invoice-line Merkle root,
signed with Ed25519, verifiable offline with the published public key.

Snapshot layout (a directory or an S3 prefix):
    manifest.json      {"version", "month", "created_at", "files": {name: sha256}, "invoice_lines",
                        "merkle_root"}, canonical JSON (sorted keys, no spaces)
    manifest.sig       Ed25519 signature of manifest.json's bytes (raw 64 bytes)
    public_key.pem     the key that verifies it
    <name>             each exported file listed in the manifest
Invoice lines are the Merkle leaves, in invoice_lines.csv order, one CSV row (without its line
break) per leaf.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .merkle import merkle_proof, streamed_merkle_root, verify_proof

MANIFEST, SIGNATURE, PUBLIC_KEY, LINES = "manifest.json", "manifest.sig", "public_key.pem", "invoice_lines.csv"


# An object of a snapshot: in memory, or in a local file for the big exports (a month's usage
# rollups run to gigabytes at 100k contracts), which are then hashed and sent in streams.
Blob = bytes | Path
_CHUNK = 1 << 20


def sha256_hex(data: Blob) -> str:
    if not isinstance(data, Path):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with data.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def blob_size(data: Blob) -> int:
    return data.stat().st_size if isinstance(data, Path) else len(data)


def blob_bytes(data: Blob) -> bytes:
    return data.read_bytes() if isinstance(data, Path) else data


def line_leaves(invoice_lines_csv: Blob) -> Iterator[bytes]:
    """The Merkle leaves, read one at a time (a file of millions of lines is never held whole)."""
    if isinstance(invoice_lines_csv, Path):
        with invoice_lines_csv.open("rb") as f:
            next(f, None)  # the header is not a line
            for line in f:
                yield line.rstrip(b"\r\n")
        return
    rows = invoice_lines_csv.decode().splitlines()
    yield from (r.encode() for r in rows[1:])  # the header is not a line


def build_snapshot(month: str, created_at: str, files: dict[str, Blob], key: Ed25519PrivateKey) -> dict[str, Blob]:
    """Every object of the snapshot: the files, the manifest, its signature and the public key."""
    root, lines = streamed_merkle_root(line_leaves(files[LINES]))
    manifest = {"version": "v1", "month": month, "created_at": created_at,
                "files": {name: sha256_hex(data) for name, data in sorted(files.items())},
                "invoice_lines": lines, "merkle_root": root}
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {**files, MANIFEST: manifest_bytes, SIGNATURE: key.sign(manifest_bytes), PUBLIC_KEY: public}


def build_evidence(subject: dict, created_at: str, files: dict[str, bytes], key: Ed25519PrivateKey) -> dict[str, bytes]:
    """An evidence bundle (proof of delivery for a dispute), signed exactly like a snapshot: the
    manifest names what it proves (``subject``: contract, org, range, row count) and each file's hash."""
    manifest = {"version": "v1", "kind": "evidence", "created_at": created_at, **subject,
                "files": {name: sha256_hex(data) for name, data in sorted(files.items())}}
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {**files, MANIFEST: manifest_bytes, SIGNATURE: key.sign(manifest_bytes), PUBLIC_KEY: public}


@dataclass(frozen=True)
class SnapshotCheck:
    ok: bool
    problems: list[str]
    manifest: dict | None


def verify_snapshot(objects: dict[str, Blob], public_key_pem: bytes) -> SnapshotCheck:
    """Signature, every file's hash and the Merkle root, and no file beside them that the manifest
    does not list; each problem names the file."""
    problems = []
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, Ed25519PublicKey):
        return SnapshotCheck(False, ["the public key is not an Ed25519 key"], None)
    if objects.get(MANIFEST) is None:
        return SnapshotCheck(False, [f"{MANIFEST}: missing"], None)
    manifest_bytes = blob_bytes(objects[MANIFEST])
    try:
        key.verify(blob_bytes(objects.get(SIGNATURE, b"")), manifest_bytes)
    except InvalidSignature:
        problems.append(f"{MANIFEST}: the signature does not match (manifest or {SIGNATURE} changed, or another key)")
    manifest = json.loads(manifest_bytes)
    for name, expected in sorted(manifest["files"].items()):
        data = objects.get(name)
        if data is None:
            problems.append(f"{name}: missing")
        elif sha256_hex(data) != expected:
            problems.append(f"{name}: SHA-256 {sha256_hex(data)[:16]}... differs from the manifest's {expected[:16]}...")
    for name in sorted(set(objects) - set(manifest["files"]) - {MANIFEST, SIGNATURE, PUBLIC_KEY}):
        problems.append(f"{name}: not in the manifest (added after signing?)")
    if LINES in objects and streamed_merkle_root(line_leaves(objects[LINES]))[0] != manifest["merkle_root"]:
        problems.append(f"{LINES}: the Merkle root of its lines differs from the manifest's")
    return SnapshotCheck(not problems, problems, manifest)


def prove_line(objects: dict[str, Blob], line_key: str) -> tuple[bytes, list[tuple[str, str]], bool]:
    """The line whose first two CSV fields are ``invoice_id,line_no`` (as "invoice_id#line_no"), its
    Merkle path and whether it leads to the manifest's root."""
    manifest = json.loads(blob_bytes(objects[MANIFEST]))
    leaves = list(line_leaves(objects[LINES]))  # the proof needs every level of the tree
    invoice_id, _, line_no = line_key.rpartition("#")
    for i, leaf in enumerate(leaves):
        fields = next(csv.reader([leaf.decode()]))
        if fields[0] == invoice_id and fields[1] == line_no:
            proof = merkle_proof(leaves, i)
            return leaf, proof, verify_proof(leaf, proof, manifest["merkle_root"])
    raise KeyError(f"invoice line {line_key!r} is not in {LINES}")
