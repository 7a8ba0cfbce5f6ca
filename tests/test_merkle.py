"""RFC 9162 Merkle hashing and proofs: CT's known answers, and properties against the RFC.

The known answers are the classic eight-entry test tree of certificate-transparency
(as transparency-dev/merkle's proof/verify_test.go carries it). The properties
compare the storage-agnostic functions, fed only by the perfect subtrees ``extend``
produced, with two references: ``root_from_leaf_hashes`` and, independently, the
RFC's recursive definitions of MTH, PATH and PROOF written out literally below.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditexchange.errors import ProofError
from creditexchange.node.ledger.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    Frontier,
    NodeId,
    batch_inclusion_proofs,
    consistency_proof,
    consistency_proof_ranges,
    extend,
    frontier_from,
    inclusion_proof,
    inclusion_proof_ranges,
    leaf_hash,
    node_hash,
    nodes_for,
    perfect_subtrees,
    range_hash,
    root,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

# ------------------------------------------------------------------- known answers

CT_ENTRIES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = {  # tree size -> root
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
# (0-based leaf index, tree size, proof); the Go file numbers leaves from 1.
CT_INCLUSION_PROOFS = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CT_CONSISTENCY_PROOFS = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def ct_store() -> dict[NodeId, bytes]:
    _, created = extend(Frontier(0, ()), [leaf_hash(entry) for entry in CT_ENTRIES])
    return {(level, index): value for level, index, value in created}


def no_storage(node: NodeId) -> bytes:
    raise AssertionError(f"looked up {node} where no lookup is needed")


def test_the_empty_tree_hashes_to_sha256_of_nothing() -> None:
    expected = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert EMPTY_ROOT.hex() == expected
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    assert root(0, no_storage) == EMPTY_ROOT
    assert Frontier(0, ()).root() == EMPTY_ROOT
    assert frontier_from(0, no_storage) == Frontier(0, ())


def test_the_leaf_hash_of_an_empty_entry_is_the_ct_known_answer() -> None:
    expected = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert leaf_hash(b"").hex() == expected
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()


@pytest.mark.parametrize("size", sorted(CT_ROOTS))
def test_the_ct_test_tree_has_the_known_root_at_every_size(size: int) -> None:
    store = ct_store()
    leaves = [leaf_hash(entry) for entry in CT_ENTRIES[:size]]
    expected = bytes.fromhex(CT_ROOTS[size])
    assert root_from_leaf_hashes(leaves) == expected
    assert root(size, store.__getitem__) == expected
    assert extend(Frontier(0, ()), leaves)[0].root() == expected
    assert frontier_from(size, store.__getitem__).root() == expected


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION_PROOFS)
def test_the_ct_test_tree_gives_and_accepts_the_known_inclusion_proofs(
    index: int, size: int, proof: list[str]
) -> None:
    expected = [bytes.fromhex(h) for h in proof]
    assert inclusion_proof(index, size, ct_store().__getitem__) == expected
    tree_root = bytes.fromhex(CT_ROOTS[size])
    verify_inclusion(leaf_hash(CT_ENTRIES[index]), index, size, expected, tree_root)


@pytest.mark.parametrize(("old_size", "new_size", "proof"), CT_CONSISTENCY_PROOFS)
def test_the_ct_test_tree_gives_and_accepts_the_known_consistency_proofs(
    old_size: int, new_size: int, proof: list[str]
) -> None:
    expected = [bytes.fromhex(h) for h in proof]
    assert consistency_proof(old_size, new_size, ct_store().__getitem__) == expected
    old_root, new_root = bytes.fromhex(CT_ROOTS[old_size]), bytes.fromhex(CT_ROOTS[new_size])
    verify_consistency(old_size, new_size, old_root, new_root, expected)


# ------------------------------------------------- the RFC's definitions, written out

MAX_SIZE = 300
ENTRIES = [b"cross-city lookup %d" % i for i in range(MAX_SIZE + 2)]
LEAVES = [leaf_hash(entry) for entry in ENTRIES]


def rfc_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc_mth(d: Sequence[bytes]) -> bytes:
    """MTH(D[n]), RFC 9162 §2.1.1, over entries."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = rfc_k(len(d))
    return hashlib.sha256(b"\x01" + rfc_mth(d[:k]) + rfc_mth(d[k:])).digest()


def rfc_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]), RFC 9162 §2.1.3.1."""
    if len(d) == 1:
        return []
    k = rfc_k(len(d))
    if m < k:
        return [*rfc_path(m, d[:k]), rfc_mth(d[k:])]
    return [*rfc_path(m - k, d[k:]), rfc_mth(d[:k])]


def rfc_subproof(m: int, d: Sequence[bytes], whole: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b), RFC 9162 §2.1.4.1."""
    if m == len(d):
        return [] if whole else [rfc_mth(d)]
    k = rfc_k(len(d))
    if m <= k:
        return [*rfc_subproof(m, d[:k], whole), rfc_mth(d[k:])]
    return [*rfc_subproof(m - k, d[k:], False), rfc_mth(d[:k])]


def rfc_proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]), RFC 9162 §2.1.4.1 (empty for m == 0, as the verifier expects)."""
    return [] if m == 0 else rfc_subproof(m, d, True)


REFERENCE_ROOTS = [root_from_leaf_hashes(LEAVES[:n]) for n in range(MAX_SIZE + 2)]


@cache
def reference_range_hash(start: int, end: int) -> bytes:
    return root_from_leaf_hashes(LEAVES[start:end])


def test_the_reference_root_is_the_rfc_mth_at_every_size() -> None:
    for n in range(MAX_SIZE + 2):
        assert REFERENCE_ROOTS[n] == rfc_mth(ENTRIES[:n]), n


# ---------------------------------------------------------- logs built by ``extend``


@dataclass
class Log:
    """A log kept the way storage keeps it: only its perfect subtrees, by (level, index)."""

    size: int
    frontier: Frontier
    nodes: dict[NodeId, bytes]
    lookups: list[NodeId] = field(default_factory=list)

    def lookup(self, node: NodeId) -> bytes:
        self.lookups.append(node)
        return self.nodes[node]

    def counted(self, compute: Callable[[], object], needed: set[NodeId]) -> None:
        """Run ``compute`` and check it looked up exactly ``needed``, each node once."""
        self.lookups.clear()
        compute()
        assert sorted(self.lookups) == sorted(needed)


def build_log(size: int, cuts: Sequence[int] = ()) -> Log:
    bounds = [0, *sorted(cuts), size]
    frontier = Frontier(0, ())
    nodes: dict[NodeId, bytes] = {}
    for start, end in pairwise(bounds):
        before = frontier
        frontier, created = extend(frontier, LEAVES[start:end])
        assert frontier.size == end
        if start == end:
            assert (frontier, created) == (before, [])
        for level, index, value in created:
            assert (level, index) not in nodes, f"{(level, index)} was created twice"
            nodes[(level, index)] = value
    return Log(size, frontier, nodes)


@st.composite
def logs(draw: st.DrawFn, min_size: int = 0) -> Log:
    size = draw(st.integers(min_size, MAX_SIZE))
    cuts = draw(st.lists(st.integers(0, size), max_size=16))
    return build_log(size, cuts)


FULL_LOG = build_log(MAX_SIZE + 1)
FRONTIERS = [Frontier(0, ())]  # the frontier after each append of one leaf
for _leaf in LEAVES:
    FRONTIERS.append(extend(FRONTIERS[-1], [_leaf])[0])
HEAVY = settings(deadline=None, max_examples=60)


def every_perfect_subtree(size: int) -> set[NodeId]:
    return {(level, index) for level in range(size.bit_length()) for index in range(size >> level)}


@HEAVY
@given(logs())
def test_extend_stores_every_perfect_subtree_once_with_its_rfc_hash(log: Log) -> None:
    assert set(log.nodes) == every_perfect_subtree(log.size)
    for (level, index), value in log.nodes.items():
        assert value == reference_range_hash(index << level, (index + 1) << level)


@HEAVY
@given(st.integers(0, MAX_SIZE), st.data())
def test_any_batching_of_the_same_leaves_yields_the_same_nodes_and_frontier(
    size: int, data: st.DataObject
) -> None:
    one_batch = build_log(size)
    one_by_one = build_log(size, range(size))
    assert one_by_one.nodes == one_batch.nodes
    assert one_by_one.frontier == one_batch.frontier
    for _ in range(3):
        cuts = data.draw(st.lists(st.integers(0, size), max_size=24))
        other = build_log(size, cuts)
        assert other.nodes == one_batch.nodes
        assert other.frontier == one_batch.frontier


@HEAVY
@given(logs())
def test_the_frontier_is_the_right_edge_and_frontier_from_rebuilds_it(log: Log) -> None:
    decomposition = perfect_subtrees(0, log.size)
    assert log.frontier.hashes == tuple(log.nodes[node] for node in decomposition)
    assert log.frontier.root() == REFERENCE_ROOTS[log.size]
    log.counted(partial(frontier_from, log.size, log.lookup), set(decomposition))
    assert frontier_from(log.size, log.lookup) == log.frontier
    for n in range(log.size + 1):  # every earlier state of the log, too
        assert frontier_from(n, log.lookup) == FRONTIERS[n]


@HEAVY
@given(logs())
def test_the_root_from_stored_perfect_subtrees_is_the_reference_root_at_every_size(
    log: Log,
) -> None:
    for n in range(log.size + 1):
        log.counted(partial(root, n, log.lookup), nodes_for([(0, n)]))
        assert len(log.lookups) == n.bit_count()
        assert root(n, log.lookup) == REFERENCE_ROOTS[n]


@HEAVY
@given(logs(min_size=1))
def test_every_inclusion_proof_verifies_and_needs_few_lookups(log: Log) -> None:
    size, tree_root = log.size, REFERENCE_ROOTS[log.size]
    for index in range(size):
        ranges = inclusion_proof_ranges(index, size)
        needed = nodes_for(ranges)
        assert len(needed) <= 2 * size.bit_length()
        log.counted(partial(inclusion_proof, index, size, log.lookup), needed)
        proof = inclusion_proof(index, size, log.lookup)
        assert proof == [reference_range_hash(a, b) for a, b in ranges]
        verify_inclusion(LEAVES[index], index, size, proof, tree_root)


@HEAVY
@given(logs(min_size=1))
def test_every_consistency_proof_verifies_and_needs_few_lookups(log: Log) -> None:
    new_size, new_root = log.size, REFERENCE_ROOTS[log.size]
    verify_consistency(0, new_size, EMPTY_ROOT, new_root, [])
    for old_size in range(1, new_size + 1):
        ranges = consistency_proof_ranges(old_size, new_size)
        needed = nodes_for(ranges)
        assert len(needed) <= 2 * new_size.bit_length()
        log.counted(partial(consistency_proof, old_size, new_size, log.lookup), needed)
        proof = consistency_proof(old_size, new_size, log.lookup)
        assert proof == [reference_range_hash(a, b) for a, b in ranges]
        verify_consistency(old_size, new_size, REFERENCE_ROOTS[old_size], new_root, proof)


@settings(deadline=None)
@given(st.integers(1, MAX_SIZE), st.data())
def test_inclusion_proofs_are_the_rfc_path(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    expected = rfc_path(index, ENTRIES[:size])
    assert inclusion_proof(index, size, FULL_LOG.lookup) == expected


@settings(deadline=None)
@given(st.integers(1, MAX_SIZE), st.data())
def test_consistency_proofs_are_the_rfc_proof(new_size: int, data: st.DataObject) -> None:
    old_size = data.draw(st.integers(0, new_size))
    expected = rfc_proof(old_size, ENTRIES[:new_size])
    assert consistency_proof(old_size, new_size, FULL_LOG.lookup) == expected


# ---------------------------------------------------------------------- tree ranges


def test_perfect_subtrees_follow_the_binary_decomposition_of_the_range() -> None:
    assert perfect_subtrees(0, 6) == [(2, 0), (1, 2)]
    assert perfect_subtrees(4, 7) == [(1, 2), (0, 6)]
    assert perfect_subtrees(0, 8) == [(3, 0)]
    assert perfect_subtrees(3, 4) == [(0, 3)]
    assert perfect_subtrees(5, 5) == []
    assert perfect_subtrees(0, 13) == [(3, 0), (2, 2), (0, 12)]
    assert nodes_for([(0, 6), (4, 7), (6, 7)]) == {(2, 0), (1, 2), (0, 6)}


@pytest.mark.parametrize(("start", "end"), [(2, 7), (1, 3), (4, 12), (6, 10), (-1, 0), (3, 2)])
def test_a_range_that_is_no_rfc_subtree_is_refused_not_hashed_wrongly(start: int, end: int) -> None:
    with pytest.raises(ValueError, match=r"is not a"):
        perfect_subtrees(start, end)
    with pytest.raises(ValueError, match=r"is not a"):
        range_hash(start, end, FULL_LOG.lookup)


@given(st.integers(0, MAX_SIZE + 1), st.data())
def test_range_hash_is_the_mth_of_exactly_the_tree_ranges(start: int, data: st.DataObject) -> None:
    end = data.draw(st.integers(start, MAX_SIZE + 1))
    size = end - start
    first = 1 << (size.bit_length() - 1) if size else 1
    if start % first == 0:
        assert range_hash(start, end, FULL_LOG.lookup) == root_from_leaf_hashes(LEAVES[start:end])
    else:
        with pytest.raises(ValueError, match=r"must start at a multiple of"):
            range_hash(start, end, FULL_LOG.lookup)


def test_storage_returning_a_malformed_hash_is_refused() -> None:
    with pytest.raises(ValueError, match=r"storage returned 31 bytes for perfect subtree \(2, 0\)"):
        root(4, lambda node: bytes(31))


@pytest.mark.parametrize(("index", "size"), [(0, 0), (3, 3), (-1, 5)])
def test_there_is_no_inclusion_proof_outside_the_tree(index: int, size: int) -> None:
    with pytest.raises(ValueError, match=rf"leaf index {index} is not in a tree of {size}"):
        inclusion_proof_ranges(index, size)


@pytest.mark.parametrize(("old_size", "new_size"), [(5, 4), (-1, 3)])
def test_there_is_no_consistency_proof_backwards(old_size: int, new_size: int) -> None:
    with pytest.raises(ValueError, match=r"there is no consistency proof"):
        consistency_proof_ranges(old_size, new_size)


# ------------------------------------------------------------------------- appending


def test_extend_refuses_a_malformed_leaf_hash_and_appends_nothing() -> None:
    with pytest.raises(ValueError, match=r"leaf hash 1 of the batch is 31 bytes long"):
        extend(Frontier(0, ()), [LEAVES[0], LEAVES[1][:31]])


@pytest.mark.parametrize(
    ("size", "hashes", "message"),
    [
        (3, (LEAVES[0],), r"a frontier of 3 leaves has 2 perfect subtree hashes, not 1"),
        (0, (LEAVES[0],), r"a frontier of 0 leaves has 0 perfect subtree hashes, not 1"),
        (1, (b"short",), r"frontier hash 0 is 5 bytes long"),
        (-1, (), r"a log cannot have -1 leaves"),
    ],
)
def test_a_frontier_that_cannot_be_is_refused(
    size: int, hashes: tuple[bytes, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Frontier(size, hashes)


# ---------------------------------------------------------- inclusion: what is refused


def flip(value: bytes, bit: int) -> bytes:
    return value[: bit // 8] + bytes([value[bit // 8] ^ (1 << (bit % 8))]) + value[bit // 8 + 1 :]


def inclusion_shape(index: int, size: int) -> tuple[bool, ...]:
    """Which side each proof hash joins on (True: from the left): all a verifier uses."""
    return tuple(end <= index for _, end in inclusion_proof_ranges(index, size))


def consistency_shape(old_size: int, new_size: int) -> tuple[bool, tuple[bool, ...]]:
    """Whether the old root seeds the proof, and which side each proof hash joins on."""
    ranges = consistency_proof_ranges(old_size, new_size)
    return old_size & (old_size - 1) == 0, tuple(end <= old_size for _, end in ranges)


@st.composite
def inclusion_claims(draw: st.DrawFn) -> tuple[int, int, list[bytes]]:
    size = draw(st.integers(1, MAX_SIZE))
    index = draw(st.integers(0, size - 1))
    return index, size, inclusion_proof(index, size, FULL_LOG.lookup)


@given(inclusion_claims(), st.data())
def test_an_inclusion_proof_with_any_bit_flipped_is_refused(
    claim: tuple[int, int, list[bytes]], data: st.DataObject
) -> None:
    index, size, proof = claim
    if not proof:
        return
    position = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1))
    tampered = [*proof]
    tampered[position] = flip(proof[position], bit)
    with pytest.raises(ProofError, match=r"does not verify"):
        verify_inclusion(LEAVES[index], index, size, tampered, REFERENCE_ROOTS[size])


@given(inclusion_claims(), st.sampled_from(["drop last", "drop first", "append", "prepend"]))
def test_an_inclusion_proof_shortened_or_lengthened_by_one_is_refused(
    claim: tuple[int, int, list[bytes]], change: str
) -> None:
    index, size, proof = claim
    extra = REFERENCE_ROOTS[size]
    changed = {
        "drop last": proof[:-1],
        "drop first": proof[1:],
        "append": [*proof, extra],
        "prepend": [extra, *proof],
    }[change]
    if len(changed) == len(proof):  # nothing to drop from an empty proof
        return
    message = rf"proof has {len(changed)} hashes, .* needs {len(proof)}$"
    with pytest.raises(ProofError, match=message):
        verify_inclusion(LEAVES[index], index, size, changed, REFERENCE_ROOTS[size])


@given(inclusion_claims(), st.sampled_from([-1, 1, 2, -2]))
def test_an_inclusion_proof_for_another_index_is_refused(
    claim: tuple[int, int, list[bytes]], offset: int
) -> None:
    index, size, proof = claim
    with pytest.raises(ProofError):
        verify_inclusion(LEAVES[index], index + offset, size, proof, REFERENCE_ROOTS[size])


@given(inclusion_claims(), st.sampled_from([-1, 1]))
def test_an_inclusion_proof_for_a_neighbouring_size_is_refused_unless_it_has_the_same_shape(
    claim: tuple[int, int, list[bytes]], offset: int
) -> None:
    # The verifier sees (index, size) only as the side each hash joins on. Leaf 0 of
    # 3 and of 4 share one shape, so one proof serves both; only the signed root for
    # the size tells them apart. Every other neighbouring size is refused.
    index, size, proof = claim
    other = size + offset
    tree_root = REFERENCE_ROOTS[size]
    if 0 <= index < other and inclusion_shape(index, other) == inclusion_shape(index, size):
        verify_inclusion(LEAVES[index], index, other, proof, tree_root)
    else:
        with pytest.raises(ProofError):
            verify_inclusion(LEAVES[index], index, other, proof, tree_root)


def test_inclusion_at_a_neighbouring_size_is_refused_exactly_when_the_shape_differs() -> None:
    refused = accepted = 0
    for size in range(1, 65):
        for index in range(size):
            proof = inclusion_proof(index, size, FULL_LOG.lookup)
            for other in (size - 1, size + 1):
                claim = (LEAVES[index], index, other, proof, REFERENCE_ROOTS[size])
                if index < other and inclusion_shape(index, other) == inclusion_shape(index, size):
                    verify_inclusion(*claim)
                    accepted += 1
                else:
                    with pytest.raises(ProofError):
                        verify_inclusion(*claim)
                    refused += 1
    assert refused and accepted


def test_leaf_0_of_3_and_of_4_is_the_case_no_verifier_can_tell_apart() -> None:
    proof = inclusion_proof(0, 3, FULL_LOG.lookup)
    verify_inclusion(LEAVES[0], 0, 4, proof, REFERENCE_ROOTS[3])
    with pytest.raises(ProofError, match=r"does not verify"):
        verify_inclusion(LEAVES[0], 0, 4, proof, REFERENCE_ROOTS[4])


@given(inclusion_claims(), st.integers(0, 8 * HASH_SIZE - 1))
def test_an_inclusion_proof_against_another_root_or_leaf_is_refused(
    claim: tuple[int, int, list[bytes]], bit: int
) -> None:
    index, size, proof = claim
    tree_root, leaf = REFERENCE_ROOTS[size], LEAVES[index]
    for wrong_root in (flip(tree_root, bit), REFERENCE_ROOTS[size + 1], EMPTY_ROOT):
        with pytest.raises(ProofError, match=r"does not verify"):
            verify_inclusion(leaf, index, size, proof, wrong_root)
    for wrong_leaf in (flip(leaf, bit), LEAVES[index + 1], leaf_hash(ENTRIES[index] + b"!")):
        with pytest.raises(ProofError, match=r"does not verify"):
            verify_inclusion(wrong_leaf, index, size, proof, tree_root)


def test_an_inclusion_proof_says_how_long_it_should_be() -> None:
    proof = inclusion_proof(3, 8, FULL_LOG.lookup)
    too_long = [*proof, proof[0], proof[1]]
    with pytest.raises(
        ProofError, match=r"^proof has 5 hashes, a proof of index 3 in a tree of 8 needs 3$"
    ):
        verify_inclusion(LEAVES[3], 3, 8, too_long, REFERENCE_ROOTS[8])


@pytest.mark.parametrize(("index", "size"), [(0, 0), (5, 5), (6, 5), (-1, 5)])
def test_an_inclusion_claim_outside_the_tree_is_refused(index: int, size: int) -> None:
    with pytest.raises(ProofError, match=rf"leaf index {index} is not in a tree of {size} leaves"):
        verify_inclusion(LEAVES[0], index, size, [], REFERENCE_ROOTS[1])


def test_inclusion_hashes_of_the_wrong_size_are_refused() -> None:
    proof = inclusion_proof(2, 5, FULL_LOG.lookup)
    tree_root = REFERENCE_ROOTS[5]
    with pytest.raises(ProofError, match=r"proof hash 1 is 33 bytes long"):
        verify_inclusion(LEAVES[2], 2, 5, [proof[0], proof[1] + b"\x00", proof[2]], tree_root)
    with pytest.raises(ProofError, match=r"the root is 31 bytes long"):
        verify_inclusion(LEAVES[2], 2, 5, proof, tree_root[:31])
    with pytest.raises(ProofError, match=r"the leaf hash is 0 bytes long"):
        verify_inclusion(b"", 0, 1, [], REFERENCE_ROOTS[1])
    with pytest.raises(ProofError, match=r"the leaf hash is 5 bytes long"):
        verify_inclusion(ENTRIES[0][:5], 0, 1, [], REFERENCE_ROOTS[1])


# -------------------------------------------------------- consistency: what is refused


@st.composite
def consistency_claims(draw: st.DrawFn) -> tuple[int, int, list[bytes]]:
    new_size = draw(st.integers(2, MAX_SIZE))
    old_size = draw(st.integers(1, new_size - 1))
    return old_size, new_size, consistency_proof(old_size, new_size, FULL_LOG.lookup)


def check_consistency(old_size: int, new_size: int, proof: Sequence[bytes]) -> None:
    roots = REFERENCE_ROOTS
    verify_consistency(old_size, new_size, roots[old_size], roots[new_size], proof)


@given(consistency_claims(), st.data())
def test_a_consistency_proof_with_any_bit_flipped_is_refused(
    claim: tuple[int, int, list[bytes]], data: st.DataObject
) -> None:
    old_size, new_size, proof = claim
    position = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1))
    tampered = [*proof]
    tampered[position] = flip(proof[position], bit)
    with pytest.raises(ProofError, match=r"does not verify"):
        check_consistency(old_size, new_size, tampered)


@given(consistency_claims(), st.sampled_from(["drop last", "drop first", "append", "prepend"]))
def test_a_consistency_proof_shortened_or_lengthened_by_one_is_refused(
    claim: tuple[int, int, list[bytes]], change: str
) -> None:
    old_size, new_size, proof = claim
    extra = REFERENCE_ROOTS[old_size]
    changed = {
        "drop last": proof[:-1],
        "drop first": proof[1:],
        "append": [*proof, extra],
        "prepend": [extra, *proof],
    }[change]
    message = rf"proof has {len(changed)} hashes, .* needs {len(proof)}$"
    with pytest.raises(ProofError, match=message):
        check_consistency(old_size, new_size, changed)


@given(consistency_claims(), st.sampled_from(["old", "new"]), st.sampled_from([-1, 1]))
def test_a_consistency_proof_for_a_neighbouring_size_is_refused_unless_it_has_the_same_shape(
    claim: tuple[int, int, list[bytes]], which: str, offset: int
) -> None:
    # As with inclusion, sizes that share a shape (2 -> 3 and 2 -> 4, say) share
    # proofs; only roots signed for the sizes tell them apart.
    old_size, new_size, proof = claim
    old_root, new_root = REFERENCE_ROOTS[old_size], REFERENCE_ROOTS[new_size]
    if which == "old":
        other_old, other_new = old_size + offset, new_size
    else:
        other_old, other_new = old_size, new_size + offset
    same_shape = 0 < other_old < other_new and consistency_shape(
        other_old, other_new
    ) == consistency_shape(old_size, new_size)
    if same_shape:
        verify_consistency(other_old, other_new, old_root, new_root, proof)
    else:
        with pytest.raises(ProofError):
            verify_consistency(other_old, other_new, old_root, new_root, proof)


def test_consistency_at_a_neighbouring_size_is_refused_exactly_when_the_shape_differs() -> None:
    refused = accepted = 0
    for new_size in range(2, 41):
        for old_size in range(1, new_size):
            proof = consistency_proof(old_size, new_size, FULL_LOG.lookup)
            roots = (REFERENCE_ROOTS[old_size], REFERENCE_ROOTS[new_size])
            shape = consistency_shape(old_size, new_size)
            for m, n in [
                (old_size - 1, new_size),
                (old_size + 1, new_size),
                (old_size, new_size - 1),
                (old_size, new_size + 1),
            ]:
                if 0 < m < n and consistency_shape(m, n) == shape:
                    verify_consistency(m, n, *roots, proof)
                    accepted += 1
                else:
                    with pytest.raises(ProofError):
                        verify_consistency(m, n, *roots, proof)
                    refused += 1
    assert refused and accepted


def test_2_to_3_and_2_to_4_is_a_case_no_verifier_can_tell_apart() -> None:
    proof = consistency_proof(2, 3, FULL_LOG.lookup)
    verify_consistency(2, 4, REFERENCE_ROOTS[2], REFERENCE_ROOTS[3], proof)
    with pytest.raises(ProofError, match=r"does not verify"):
        verify_consistency(2, 4, REFERENCE_ROOTS[2], REFERENCE_ROOTS[4], proof)


@given(consistency_claims(), st.integers(0, 8 * HASH_SIZE - 1))
def test_a_consistency_proof_against_other_roots_is_refused(
    claim: tuple[int, int, list[bytes]], bit: int
) -> None:
    old_size, new_size, proof = claim
    old_root, new_root = REFERENCE_ROOTS[old_size], REFERENCE_ROOTS[new_size]
    for wrong_old, wrong_new in [
        (flip(old_root, bit), new_root),
        (old_root, flip(new_root, bit)),
        (new_root, old_root),
        (REFERENCE_ROOTS[old_size - 1], new_root),
        (old_root, REFERENCE_ROOTS[new_size + 1]),
    ]:
        with pytest.raises(ProofError, match=r"does not verify"):
            verify_consistency(old_size, new_size, wrong_old, wrong_new, proof)


def test_a_consistency_proof_says_how_long_it_should_be() -> None:
    with pytest.raises(
        ProofError,
        match=r"^proof has 0 hashes, a consistency proof from a tree of 3 to one of 8 needs 4$",
    ):
        check_consistency(3, 8, [])


def test_a_log_that_shrank_is_refused() -> None:
    with pytest.raises(ProofError, match=r"logs only grow"):
        verify_consistency(5, 4, REFERENCE_ROOTS[5], REFERENCE_ROOTS[4], [])
    with pytest.raises(ProofError, match=r"cannot have -1 leaves"):
        verify_consistency(-1, 4, EMPTY_ROOT, REFERENCE_ROOTS[4], [])


def test_equal_sizes_need_an_empty_proof_and_the_same_root() -> None:
    verify_consistency(5, 5, REFERENCE_ROOTS[5], REFERENCE_ROOTS[5], [])
    with pytest.raises(ProofError, match=r"two trees of 5 leaves have different roots"):
        verify_consistency(5, 5, REFERENCE_ROOTS[5], REFERENCE_ROOTS[4], [])
    with pytest.raises(ProofError, match=r"proof has 1 hashes, .* needs 0"):
        verify_consistency(5, 5, REFERENCE_ROOTS[5], REFERENCE_ROOTS[5], [REFERENCE_ROOTS[5]])


def test_every_log_extends_the_empty_one_whose_only_root_is_the_empty_root() -> None:
    for new_size in (0, 1, 7):
        verify_consistency(0, new_size, EMPTY_ROOT, REFERENCE_ROOTS[new_size], [])
    with pytest.raises(ProofError, match=r"proof has 1 hashes, .* needs 0"):
        verify_consistency(0, 7, EMPTY_ROOT, REFERENCE_ROOTS[7], [EMPTY_ROOT])
    with pytest.raises(ProofError, match=r"is not the root of the empty tree"):
        verify_consistency(0, 7, REFERENCE_ROOTS[1], REFERENCE_ROOTS[7], [])
    with pytest.raises(ProofError, match=r"two trees of 0 leaves have different roots"):
        verify_consistency(0, 0, EMPTY_ROOT, REFERENCE_ROOTS[1], [])


def test_consistency_hashes_of_the_wrong_size_are_refused() -> None:
    proof = consistency_proof(3, 8, FULL_LOG.lookup)
    old_root, new_root = REFERENCE_ROOTS[3], REFERENCE_ROOTS[8]
    with pytest.raises(ProofError, match=r"proof hash 2 is 31 bytes long"):
        verify_consistency(3, 8, old_root, new_root, [*proof[:2], proof[2][:31], *proof[3:]])
    with pytest.raises(ProofError, match=r"the old root is 0 bytes long"):
        verify_consistency(3, 8, b"", new_root, proof)
    with pytest.raises(ProofError, match=r"the new root is 64 bytes long"):
        verify_consistency(3, 8, old_root, new_root * 2, proof)


@given(st.integers(0, MAX_SIZE), st.integers(1, 64))
@HEAVY
def test_a_batch_s_inclusion_proofs_are_the_rfc_path_of_each_of_its_leaves(
    old_size: int, batch: int
) -> None:
    new_size = min(old_size + batch, MAX_SIZE + 2)
    old = FRONTIERS[old_size]
    new, created = extend(old, LEAVES[old_size:new_size])
    proofs = batch_inclusion_proofs(old, created, new.size)
    assert proofs == [rfc_path(m, ENTRIES[:new_size]) for m in range(old_size, new_size)]
