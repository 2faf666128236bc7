"""A Merkle tree over invoice lines, so one line can be proven part of a signed snapshot.

Leaves are SHA-256(0x00 || line bytes) and inner nodes SHA-256(0x01 || left || right) (the
prefixes keep a leaf from being passed off as a node). A level with an odd count carries its last
node up unchanged. A proof lists, from the leaf up, each sibling and whether it stands left or
right of the running hash.
"""

from __future__ import annotations

import hashlib


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    levels = [leaves]
    while len(levels[-1]) > 1:
        level = levels[-1]
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(nxt)
    return levels


def merkle_root(items: list[bytes]) -> str:
    if not items:
        return hashlib.sha256(b"").hexdigest()
    return _levels([leaf_hash(i) for i in items])[-1][0].hex()


def merkle_proof(items: list[bytes], index: int) -> list[tuple[str, str]]:
    """[(side, sibling hex)] from the leaf at ``index`` to the root; side is 'L' or 'R'."""
    proof = []
    for level in _levels([leaf_hash(i) for i in items])[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(("L" if sibling < index else "R", level[sibling].hex()))
        index //= 2
    return proof


def verify_proof(item: bytes, proof: list[tuple[str, str]], root: str) -> bool:
    running = leaf_hash(item)
    for side, sibling in proof:
        other = bytes.fromhex(sibling)
        running = node_hash(other, running) if side == "L" else node_hash(running, other)
    return running.hex() == root
