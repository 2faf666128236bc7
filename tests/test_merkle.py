"""The streamed Merkle root equals the tree built level by level, for every shape of tree."""

from __future__ import annotations

import hashlib

from billing_pipeline.domain.merkle import (_levels, leaf_hash, merkle_proof, merkle_root, node_hash,
                                            streamed_merkle_root, verify_proof)


def level_by_level_root(items: list[bytes]) -> str:
    if not items:
        return hashlib.sha256(b"").hexdigest()
    return _levels([leaf_hash(i) for i in items])[-1][0].hex()


def test_streamed_root_equals_the_level_by_level_tree_for_every_count_up_to_300():
    items = [f"line {i}".encode() for i in range(300)]
    for n in range(301):
        assert streamed_merkle_root(iter(items[:n])) == (level_by_level_root(items[:n]), n), n


def test_three_leaves_carry_the_odd_one_up_unchanged():
    a, b, c = b"a", b"b", b"c"
    expected = node_hash(node_hash(leaf_hash(a), leaf_hash(b)), leaf_hash(c)).hex()
    assert merkle_root([a, b, c]) == expected
    assert merkle_root([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_every_proof_leads_to_the_streamed_root():
    items = [f"line {i}".encode() for i in range(37)]
    root, _ = streamed_merkle_root(items)
    assert all(verify_proof(item, merkle_proof(items, i), root) for i, item in enumerate(items))
    assert not verify_proof(b"line 99", merkle_proof(items, 3), root)
