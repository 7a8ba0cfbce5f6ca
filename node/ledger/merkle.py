"""RFC 9162 (Certificate Transparency 2.0) Merkle tree hashing and proofs, storage-agnostic.

Pure functions over hashes: nothing here reads or writes storage. Whoever keeps the
log passes a ``lookup`` that returns the hash of a stored perfect subtree.

Hashing (RFC 9162 §2.1.1), SHA-256 throughout:

* ``leaf_hash(e) = SHA-256(0x00 || e)``; ``node_hash(l, r) = SHA-256(0x01 || l || r)``.
* ``MTH({}) = SHA-256()`` (``EMPTY_ROOT``); the MTH of one entry is its leaf hash; for
  n > 1, ``MTH(D[n]) = node_hash(MTH(D[0:k]), MTH(D[k:n]))`` with k the largest power
  of two smaller than n.

Perfect subtrees. ``(level, index)`` names the perfect subtree over the leaves
``[index * 2**level, (index + 1) * 2**level)``; its hash is the MTH of those leaves,
and ``(0, i)`` is the leaf hash of entry i. Once all its leaves exist a perfect
subtree's hash never changes, so a log that stores every one of them (``extend``
reports each as it is completed) is append-only, and everything else is computed
from them with O(log n) lookups and no scan of the leaves:

* A *tree range* is a range ``[start, end)`` of size s whose start is a multiple of p,
  the largest power of two <= s (the empty range is one too). Its perfect subtrees
  (``perfect_subtrees``) follow the binary decomposition of s, largest first, and its
  MTH as a list of its own is the right-to-left fold
  ``node_hash(h1, node_hash(h2, ... node_hash(h(k-1), hk)))`` of their hashes
  (``range_hash``). Every subtree the RFC recursion visits is a tree range, so every
  root and every proof hash is a ``range_hash``; anything else is refused with
  ``ValueError`` rather than hashed wrongly.
* ``inclusion_proof_ranges`` and ``consistency_proof_ranges`` name the ranges whose
  MTHs are the RFC 9162 §2.1.3.1 / §2.1.4.1 proofs, in the RFC's order. They overlap
  nowhere, and at most one of them is not itself perfect, so a proof needs at most
  about 2·log2(n) perfect subtrees; ``nodes_for`` lists them, so storage can fetch
  them all in one query.
* A ``Frontier`` is all an appender has to keep: the size and the hashes of the
  perfect subtrees of the binary decomposition of that size, largest first. Its
  ``root()`` is the tree's root; ``frontier_from`` rebuilds it from storage.
* Verification (``verify_inclusion``, ``verify_consistency``) runs the RFC 9162
  §2.1.3.2 / §2.1.4.2 algorithms after strict checks: index and sizes in range,
  every hash exactly ``HASH_SIZE`` bytes, and the proof exactly as long as the sizes
  require (neither shorter nor longer). Every refusal raises ``ProofError`` saying
  what did not verify and why; nothing returns a boolean to be forgotten.
* Consistency with the empty tree: the only root of a tree of size 0 is
  ``EMPTY_ROOT``, so an ``old_root`` for size 0 must be exactly that; any later root
  is consistent with it, with an empty proof.

What no verifier can refuse: a proof depends on ``(index, size)`` or ``(old_size,
new_size)`` only through its shape (which side each hash joins on), and different
sizes can share a shape (leaf 0 in trees of 3 and of 4, say). Such a proof verifies
for both; the root it is checked against is what pins the size, so a root must
always be taken from a checkpoint signed for that very size.

Sizes and indices are Python ints, unbounded; nothing here is limited to 64 bits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Final, TypeAlias

from creditexchange.errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "Lookup",
    "NodeId",
    "ProofError",
    "consistency_proof",
    "consistency_proof_ranges",
    "extend",
    "frontier_from",
    "inclusion_proof",
    "inclusion_proof_ranges",
    "leaf_hash",
    "node_hash",
    "nodes_for",
    "perfect_subtrees",
    "range_hash",
    "root",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()

NodeId: TypeAlias = tuple[int, int]
"""A perfect subtree: ``(level, index)``, covering leaves [index·2^level, (index+1)·2^level)."""

Lookup: TypeAlias = Callable[[NodeId], bytes]
"""Returns the stored hash of a perfect subtree (raising whatever storage raises if absent)."""

_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"
_sha256 = hashlib.sha256


# --------------------------------------------------------------------------- hashing


def leaf_hash(entry: bytes) -> bytes:
    """The RFC 9162 leaf hash: SHA-256(0x00 || entry)."""
    return _sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 9162 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """The MTH of a whole list of leaf hashes, in O(n): the reference for audits and tests.

    Built bottom-up, pairing neighbours level by level and carrying an unpaired last
    node up unchanged, which yields exactly the RFC 9162 tree (its left subtrees are
    always perfect).
    """
    for position, value in enumerate(leaf_hashes):
        _require_hash_size(value, f"leaf hash {position}", ValueError)
    level = list(leaf_hashes)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


# ---------------------------------------------------------------- tree ranges and proofs


def _split(size: int) -> int:
    """The largest power of two smaller than ``size`` (for size >= 2): RFC 9162's k."""
    return 1 << ((size - 1).bit_length() - 1)


def _check_tree_range(start: int, end: int) -> None:
    if start < 0 or end < start:
        raise ValueError(f"[{start}, {end}) is not a range of leaves")
    size = end - start
    if size:
        first = 1 << (size.bit_length() - 1)
        if start % first:
            raise ValueError(
                f"[{start}, {end}) is not a subtree of any RFC 9162 tree: its first perfect "
                f"subtree has {first} leaves, so it must start at a multiple of {first}"
            )


def perfect_subtrees(start: int, end: int) -> list[NodeId]:
    """The maximal perfect subtrees of the tree range [start, end), left to right.

    Precondition (else ``ValueError``): ``0 <= start <= end`` and ``start`` is a multiple
    of the largest power of two <= ``end - start``. The subtrees follow the binary
    decomposition of the size, largest first: [0, 6) -> [(2, 0), (1, 2)];
    [4, 7) -> [(1, 2), (0, 6)]; an empty range has none.
    """
    _check_tree_range(start, end)
    size = end - start
    nodes: list[NodeId] = []
    position = start
    for level in range(size.bit_length() - 1, -1, -1):
        if (size >> level) & 1:
            nodes.append((level, position >> level))
            position += 1 << level
    return nodes


def _fetch(lookup: Lookup, node: NodeId) -> bytes:
    value = lookup(node)
    if len(value) != HASH_SIZE:
        raise ValueError(
            f"storage returned {len(value)} bytes for perfect subtree {node}; "
            f"a hash is {HASH_SIZE} bytes"
        )
    return value


def range_hash(start: int, end: int, lookup: Lookup) -> bytes:
    """The MTH of leaves [start, end) as a list of its own, from perfect subtree hashes.

    Same precondition as :func:`perfect_subtrees`. Folds right to left:
    ``h = last; h = node_hash(previous, h)`` for each earlier subtree. The empty range
    hashes to ``EMPTY_ROOT``.
    """
    nodes = perfect_subtrees(start, end)
    if not nodes:
        return EMPTY_ROOT
    result = _fetch(lookup, nodes[-1])
    for node in reversed(nodes[:-1]):
        result = node_hash(_fetch(lookup, node), result)
    return result


def inclusion_proof_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose MTHs form PATH(index, D[size]) (RFC 9162 §2.1.3.1), leaf side first.

    ``ValueError`` unless ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of {size} leaves")
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        middle = start + _split(end - start)
        if index < middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((start, middle))
            start = middle
    ranges.reverse()
    return ranges


def consistency_proof_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The ranges whose MTHs form PROOF(old_size, D[new_size]) (RFC 9162 §2.1.4.1), in order.

    Empty when ``old_size == 0`` or ``old_size == new_size``; ``ValueError`` unless
    ``0 <= old_size <= new_size``.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(
            f"there is no consistency proof from a tree of {old_size} leaves to one of {new_size}"
        )
    if old_size in (0, new_size):
        return []
    ranges: list[tuple[int, int]] = []
    start, end = 0, new_size
    old_root_is_whole = True  # SUBPROOF's b: the subtree at hand is the old tree itself
    while end != old_size:
        middle = start + _split(end - start)
        if old_size <= middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((start, middle))
            start = middle
            old_root_is_whole = False
    if not old_root_is_whole:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def nodes_for(ranges: Iterable[tuple[int, int]]) -> set[NodeId]:
    """Every perfect subtree needed to hash the given tree ranges."""
    return {node for start, end in ranges for node in perfect_subtrees(start, end)}


def inclusion_proof(index: int, size: int, lookup: Lookup) -> list[bytes]:
    """The RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
    return [range_hash(start, end, lookup) for start, end in inclusion_proof_ranges(index, size)]


def consistency_proof(old_size: int, new_size: int, lookup: Lookup) -> list[bytes]:
    """The RFC 9162 consistency proof between the trees of ``old_size`` and ``new_size``."""
    return [
        range_hash(start, end, lookup)
        for start, end in consistency_proof_ranges(old_size, new_size)
    ]


def root(size: int, lookup: Lookup) -> bytes:
    """The root (MTH) of the tree of the first ``size`` leaves; ``EMPTY_ROOT`` for 0."""
    if size < 0:
        raise ValueError(f"a tree cannot have {size} leaves")
    return range_hash(0, size, lookup)


# ------------------------------------------------------------------------ verification


def _require_hash_size(value: bytes, what: str, error: type[ValueError]) -> None:
    if len(value) != HASH_SIZE:
        raise error(f"{what} is {len(value)} bytes long; a SHA-256 hash is {HASH_SIZE}")


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves with ``root``.

    RFC 9162 §2.1.3.2. Raises :class:`ProofError` when ``index`` is not below ``size``,
    when any hash is not ``HASH_SIZE`` bytes, when the proof is shorter or longer
    than such a proof is, and when the proof does not lead to ``root``.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of {size} leaves")
    _require_hash_size(leaf_hash, "the leaf hash", ProofError)
    _require_hash_size(root, "the root", ProofError)
    for position, value in enumerate(proof):
        _require_hash_size(value, f"proof hash {position}", ProofError)
    needed = len(inclusion_proof_ranges(index, size))
    if len(proof) != needed:
        raise ProofError(
            f"proof has {len(proof)} hashes, a proof of index {index} "
            f"in a tree of {size} needs {needed}"
        )
    fn, sn = index, size - 1
    computed = leaf_hash
    for sibling in proof:
        if sn == 0:  # cannot happen once the length is right; the RFC checks it anyway
            raise ProofError(f"proof of index {index} in a tree of {size} is too long")
        if fn % 2 == 1 or fn == sn:
            computed = node_hash(sibling, computed)
            while fn and fn % 2 == 0:
                fn >>= 1
                sn >>= 1
        else:
            computed = node_hash(computed, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # likewise unreachable
        raise ProofError(f"proof of index {index} in a tree of {size} is too short")
    if computed != root:
        raise ProofError(
            f"inclusion proof of index {index} in a tree of {size} does not verify: "
            f"it leads to root {computed.hex()}, not {root.hex()}"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``new_size`` with ``new_root`` extends the one of ``old_size``.

    RFC 9162 §2.1.4.2. Raises :class:`ProofError` when ``old_size`` is negative or
    larger than ``new_size``, when any hash is not ``HASH_SIZE`` bytes, when the proof
    is shorter or longer than such a proof is, or when it does not lead to both roots.
    Equal sizes need an empty proof and equal roots. ``old_size == 0`` needs an empty
    proof and ``old_root == EMPTY_ROOT`` (the empty tree's only root); any
    ``new_root`` is consistent with it.
    """
    if old_size < 0:
        raise ProofError(f"a tree cannot have {old_size} leaves")
    if old_size > new_size:
        raise ProofError(
            f"a tree of {new_size} leaves cannot extend an earlier one of {old_size}: "
            f"logs only grow"
        )
    _require_hash_size(old_root, "the old root", ProofError)
    _require_hash_size(new_root, "the new root", ProofError)
    for position, value in enumerate(proof):
        _require_hash_size(value, f"proof hash {position}", ProofError)
    needed = len(consistency_proof_ranges(old_size, new_size))
    if len(proof) != needed:
        raise ProofError(
            f"proof has {len(proof)} hashes, a consistency proof from a tree of {old_size} "
            f"to one of {new_size} needs {needed}"
        )
    if old_size == 0 and old_root != EMPTY_ROOT:
        raise ProofError(
            f"the old root {old_root.hex()} is not the root of the empty tree, "
            f"which is always {EMPTY_ROOT.hex()}"
        )
    if old_size == new_size:
        if old_root != new_root:
            raise ProofError(
                f"two trees of {old_size} leaves have different roots, {old_root.hex()} "
                f"and {new_root.hex()}: they are not the same log"
            )
        return
    if old_size == 0:
        return

    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn % 2 == 1:
        fn >>= 1
        sn >>= 1
    old_computed = new_computed = path[0]
    for sibling in path[1:]:
        if sn == 0:  # cannot happen once the length is right; the RFC checks it anyway
            raise ProofError(f"consistency proof from {old_size} to {new_size} is too long")
        if fn % 2 == 1 or fn == sn:
            old_computed = node_hash(sibling, old_computed)
            new_computed = node_hash(sibling, new_computed)
            while fn and fn % 2 == 0:
                fn >>= 1
                sn >>= 1
        else:
            new_computed = node_hash(new_computed, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # likewise unreachable
        raise ProofError(f"consistency proof from {old_size} to {new_size} is too short")
    if old_computed != old_root:
        raise ProofError(
            f"consistency proof from a tree of {old_size} to one of {new_size} does not "
            f"verify: it leads to old root {old_computed.hex()}, not {old_root.hex()}"
        )
    if new_computed != new_root:
        raise ProofError(
            f"consistency proof from a tree of {old_size} to one of {new_size} does not "
            f"verify: it leads to new root {new_computed.hex()}, not {new_root.hex()}"
        )


# ---------------------------------------------------------------------------- appending


@dataclass(frozen=True)
class Frontier:
    """The compact range of a log: the perfect subtree roots along its right edge.

    ``hashes`` are the hashes of the perfect subtrees of the binary decomposition of
    ``size`` (one per set bit), largest (leftmost) first; ``Frontier(0, ())`` is the
    empty log. Anything else is refused with ``ValueError``.
    """

    size: int
    hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "hashes", tuple(self.hashes))
        if self.size < 0:
            raise ValueError(f"a log cannot have {self.size} leaves")
        if len(self.hashes) != self.size.bit_count():
            raise ValueError(
                f"a frontier of {self.size} leaves has {self.size.bit_count()} perfect "
                f"subtree hashes, not {len(self.hashes)}"
            )
        for position, value in enumerate(self.hashes):
            _require_hash_size(value, f"frontier hash {position}", ValueError)

    def root(self) -> bytes:
        """The log's root (MTH); ``EMPTY_ROOT`` when it is empty."""
        if not self.hashes:
            return EMPTY_ROOT
        result = self.hashes[-1]
        for value in reversed(self.hashes[:-1]):
            result = node_hash(value, result)
        return result


def extend(
    frontier: Frontier, leaf_hashes: Sequence[bytes]
) -> tuple[Frontier, list[tuple[int, int, bytes]]]:
    """Append leaf hashes to a log; return its new frontier and every perfect subtree completed.

    The list holds ``(level, index, hash)`` for each new leaf (level 0) and for each
    perfect subtree the new leaves complete, level by level (so a node always comes
    after its children), for storage to persist every perfect subtree. Appending the
    same leaves in any batches yields the same nodes and the same frontier.
    ``ValueError`` if a leaf hash is not ``HASH_SIZE`` bytes; nothing is appended then.
    """
    if any(map(HASH_SIZE.__ne__, map(len, leaf_hashes))):
        for position, value in enumerate(leaf_hashes):
            _require_hash_size(value, f"leaf hash {position} of the batch", ValueError)
    old_size = frontier.size
    new_size = old_size + len(leaf_hashes)
    old_by_level = dict(zip(_set_bits(old_size), frontier.hashes, strict=True))
    new_by_level: dict[int, bytes] = {}
    created = list(zip(repeat(0), range(old_size, new_size), leaf_hashes, strict=False))
    sha256, prefix = _sha256, _NODE_PREFIX
    # Work up one level at a time. ``nodes`` are the new level-``level`` subtrees,
    # the first of them at index ``first``; an odd ``first`` is a right child whose
    # left sibling is the frontier's subtree of this level, and an unpaired last
    # node is the new frontier's subtree of this level.
    nodes = list(leaf_hashes)
    first, level = old_size, 0
    while nodes:
        if first & 1:
            nodes.insert(0, old_by_level[level])
            first -= 1
        if len(nodes) & 1:
            new_by_level[level] = nodes[-1]
        pairs = iter(nodes)
        nodes = [
            sha256(prefix + left + right).digest()
            for left, right in zip(pairs, pairs, strict=False)  # unpaired last: see above
        ]
        first >>= 1
        level += 1
        created.extend(zip(repeat(level), range(first, first + len(nodes)), nodes, strict=False))
    # From ``level`` up the old and new sizes agree, and so do their frontiers.
    hashes = tuple(
        new_by_level[bit] if bit < level else old_by_level[bit] for bit in _set_bits(new_size)
    )
    return Frontier(new_size, hashes), created


def batch_inclusion_proofs(
    old: Frontier, created: Sequence[tuple[int, int, bytes]], new_size: int
) -> list[list[bytes]]:
    """The inclusion proof, in the tree of ``new_size`` leaves, of every leaf of a batch.

    ``old`` and ``created`` are :func:`extend`'s input frontier and output nodes:
    every proof node of a new leaf is a perfect subtree of the old frontier or one
    the batch completed, so no storage is read.

    RFC 9162's PATH(m, D[n]) for a leaf in the j-th maximal perfect subtree P_j of
    the tree (of level L) is the leaf's siblings inside P_j, levels 0 to L-1, then
    the hash of everything right of P_j (if anything is), then P_{j-1} … P_0. The
    tail after the siblings is the same for every leaf of P_j: it is built once.
    """
    known: dict[NodeId, bytes] = dict(zip(perfect_subtrees(0, old.size), old.hashes, strict=True))
    known.update(((level, index), value) for level, index, value in created)
    tops = perfect_subtrees(0, new_size)
    top_hashes = [known[top] for top in tops]
    right_of: list[bytes | None] = [None] * len(tops)  # MTH of the subtrees right of P_j
    for j in range(len(tops) - 2, -1, -1):
        following = right_of[j + 1]
        right_of[j] = (
            top_hashes[j + 1] if following is None else node_hash(top_hashes[j + 1], following)
        )
    proofs: list[list[bytes]] = []
    for j, (level, index) in enumerate(tops):
        low, high = max(index << level, old.size), min((index + 1) << level, new_size)
        if low >= high:
            continue
        following = right_of[j]
        tail = ([] if following is None else [following]) + top_hashes[j - 1 :: -1][:j]
        # Level by level, the siblings of the leaves low … high-1: the 2^bit leaves under
        # one level-bit node share its sibling, so each is looked up once and repeated.
        columns = []
        for bit in range(level):
            first, last = low >> bit, (high - 1) >> bit
            runs = [min(high, (g + 1) << bit) - max(low, g << bit) for g in range(first, last + 1)]
            siblings = [known[(bit, g ^ 1)] for g in range(first, last + 1)]
            columns.append(list(chain.from_iterable(map(repeat, siblings, runs))))
        if columns:
            proofs.extend([*row, *tail] for row in zip(*columns, strict=True))
        else:  # a one-leaf subtree: nothing inside it
            proofs.extend(list(tail) for _ in range(low, high))
    return proofs


def _set_bits(size: int) -> list[int]:
    """The levels of the perfect subtrees of a log of ``size`` leaves, largest first."""
    return [bit for bit in range(size.bit_length() - 1, -1, -1) if (size >> bit) & 1]


def frontier_from(size: int, lookup: Lookup) -> Frontier:
    """Rebuild the frontier of a log of ``size`` leaves from its stored perfect subtrees.

    One lookup per set bit of ``size``.
    """
    if size < 0:
        raise ValueError(f"a log cannot have {size} leaves")
    return Frontier(size, tuple(_fetch(lookup, node) for node in perfect_subtrees(0, size)))
