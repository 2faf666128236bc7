"""A Merkle tree over invoice lines, so one line can be proven part of a signed snapshot.

Leaves are SHA-256(0x00 || line bytes) and inner nodes SHA-256(0x01 || left || right) (the
prefixes keep a leaf from being passed off as a node). A level with an odd count carries its last
node up unchanged. A proof lists, from the leaf up, each sibling and whether it stands left or
right of the running hash.
"""

from __future__ import annotations

import hashlib
from typing import Iterable


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


def merkle_root(items: Iterable[bytes]) -> str:
    return streamed_merkle_root(items)[0]


def streamed_merkle_root(items: Iterable[bytes]) -> tuple[str, int]:
    """The root of the tree above over ``items`` read once, and how many there were.

    Memory is one hash per level (log2 n), not one per item: the stack holds the roots of the
    complete subtrees seen so far, left to right, like the digits of a binary counter. Folding
    them from the right at the end gives the same root as carrying an odd level's last node up
    unchanged (tests/test_merkle.py compares the two for every count up to a few hundred).
    """
    stack: list[tuple[int, bytes]] = []  # (height, subtree root)
    count = 0
    for item in items:
        count += 1
        height, node = 0, leaf_hash(item)
        while stack and stack[-1][0] == height:
            node = node_hash(stack.pop()[1], node)
            height += 1
        stack.append((height, node))
    if not stack:
        return hashlib.sha256(b"").hexdigest(), 0
    node = stack.pop()[1]
    while stack:
        node = node_hash(stack.pop()[1], node)
    return node.hex(), count


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
