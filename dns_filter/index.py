"""A compact, read-only set of domain names, sized for million-entry block lists on a Pi.

Why not a ``set[str]``: one million names cost ~107 MB as a set of strings, more than the whole
resolver may use (60 MB). Here each name is reduced to its 64-bit ``hash()`` and the keys are kept
sorted in 16 ``array('q')`` partitions with a small directory: 8.3 bytes per name.

Why the built-in ``hash()``: it is SipHash in C (~50 ns for a 25-byte name, nothing to import),
and the index is always built in-process at start-up from the list text, so a per-process seed
costs nothing; forked workers inherit the seed together with the index. The secret seed also
means nobody can craft a name that collides with a listed one: an unlisted name is reported
present with probability ``len(index) / 2**64`` (5e-14 at 1M names), and that cannot be aimed.
The price: an index written to disk (``to_bytes``) is only valid in a process with the same
seed; ``dns_filter.listcache`` records a probe key to tell, and the appliance pins the seed per
box (``PYTHONHASHSEED`` from a secret file) so that restarts can reuse it. CPython hashes an
ASCII ``str`` and its ``bytes`` alike (checked at import, with a fallback), so the fast path of
``dns_filter.lists`` feeds bytes and lookups use str.

Why batches and partitions: sorting 1M Python ints at once is slow (cache misses) and makes 1M
int objects (~40 MB transient). The builder sorts batches of 32k keys and appends each sorted
batch's share to 16 partitions (top 4 bits of the key). ``finish`` sorts each partition (made of
pre-sorted runs, which timsort merges cheaply), drops duplicates and records, per directory slot
(the next top bits), where its keys start. A lookup picks the partition and slot with two shifts
and runs the C ``bisect`` over ~16 keys. Partitions are never concatenated, so the build never
holds two copies: peak is about the final size plus one batch and one partition's ints.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice, repeat
from operator import eq

__all__ = ["DomainIndex", "DomainIndexBuilder", "IndexFormatError", "name_key", "trim_heap"]

_FLUSH = 1 << 15
"""Keys buffered as Python ints before a sorted batch is spread over the partitions."""

_PART_BITS = 4
_PARTS = 1 << _PART_BITS
_PART_WIDTH = 1 << (64 - _PART_BITS)
_PART_BOUNDS = [-(1 << 63) + i * _PART_WIDTH for i in range(1, _PARTS)]
"""Lowest key of partitions 1..15 in signed order; partition 0 starts at -2**63."""

_SLOT_TARGET = 16
"""Average keys per directory slot: a lookup bisects ~16 keys (two cache lines)."""

_MAX_BITS = 24

_HEADER = struct.Struct("<4sBBBB")
"""Serialised index: magic, key bits, partitions, key and slot item sizes; then per partition
``<QQ`` (keys, slots) and the two arrays in native byte order (a cache of this host only)."""
_MAGIC = b"EGDI"
_COUNTS = struct.Struct("<QQ")


class IndexFormatError(ValueError):
    """Serialised index bytes that do not describe a valid index (truncated or damaged)."""


def _encoded_hash(name: str | bytes) -> int:
    """Fallback key for interpreters whose str and bytes hashes differ: always hash bytes."""
    return hash(name.encode("utf-8", "surrogatepass") if isinstance(name, str) else name)


name_key: Callable[[str | bytes], int] = (
    hash if hash("ads.example.com") == hash(b"ads.example.com") else _encoded_hash
)
"""The 64-bit key of a name; equal for an ASCII ``str`` and its ``bytes``. Per process."""


class DomainIndex:
    """Immutable set of names, stored as sorted 64-bit keys (see the module docstring).

    Membership is exact string membership: the caller normalises (lowercase, no trailing dot).
    ``contains_key`` with a precomputed ``name_key`` tests one name against several indexes
    without hashing it again.
    """

    __slots__ = ("_len", "_mask", "_shift", "_table")

    def __init__(self, parts: list[array[int]], dirs: list[array[int]], bits: int) -> None:
        """Wrap 16 sorted partitions (signed key order) and their slot directories.

        ``bits`` counts the top key bits that select partition and slot together. Use
        ``build`` or ``DomainIndexBuilder`` rather than calling this directly.
        """
        half = _PARTS // 2
        # (partition, directory) pairs, rotated so that ``key >> 60``, negative for negative
        # keys, indexes the list directly (negative indexing wraps around): no addition.
        table = list(zip(parts, dirs, strict=True))
        self._table = table[half:] + table[:half]
        self._shift = 64 - bits
        self._mask = (1 << (bits - _PART_BITS)) - 1
        self._len = sum(map(len, parts))

    @classmethod
    def build(cls, names: Iterable[str | bytes]) -> DomainIndex:
        """Index ``names`` (any iterable, consumed once, duplicates dropped)."""
        builder = DomainIndexBuilder()
        builder.add_many(names)
        return builder.finish()

    def contains_key(self, key: int) -> bool:
        """True if a name whose ``name_key`` is ``key`` was added."""
        part, slots = self._table[key >> 60]
        slot = (key >> self._shift) & self._mask
        hi = slots[slot + 1]
        i = bisect_left(part, key, slots[slot], hi)
        return i != hi and part[i] == key

    def first_of(self, keys: Sequence[int], start: int = 0) -> int:
        """Position of the first of ``keys[start:]`` present in the index, or -1.

        Why: the matcher tests a name and its parents against each index; one call for all of
        them saves a Python call and the attribute loads per key (~100 ns of ~500 here).
        """
        table = self._table
        shift = self._shift
        mask = self._mask
        for pos in range(start, len(keys)):
            key = keys[pos]
            part, slots = table[key >> 60]
            slot = (key >> shift) & mask
            hi = slots[slot + 1]
            i = bisect_left(part, key, slots[slot], hi)
            if i != hi and part[i] == key:
                return pos
        return -1

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str | bytes):
            return False
        return self.contains_key(name_key(name))

    def buffers(self) -> list[bytes | array[int]]:
        """The serialised index in pieces (headers and the arrays themselves, not copies): to
        write to a file without an 8 MB transient copy. ``to_bytes`` joins them."""
        half = _PARTS // 2
        ordered = self._table[half:] + self._table[:half]  # undo the rotation of __init__
        bits = 64 - self._shift
        out: list[bytes | array[int]] = [
            _HEADER.pack(_MAGIC, bits, _PARTS, array("q").itemsize, array("I").itemsize)
        ]
        for part, slots in ordered:
            out += [_COUNTS.pack(len(part), len(slots)), part, slots]
        return out

    def to_bytes(self) -> bytes:
        """The index as bytes for ``from_bytes`` (see ``_HEADER``): ~8.3 bytes per name."""
        return b"".join(self.buffers())

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, offset: int = 0) -> tuple[DomainIndex, int]:
        """An index read from ``data`` at ``offset``, and the offset just past it.

        Checks the shape (sizes, directory bounds), not the key order: the caller guards the
        bytes with a checksum. Raises ``IndexFormatError`` for anything that does not fit.
        """
        view = memoryview(data)
        try:
            magic, bits, parts_n, key_size, slot_size = _HEADER.unpack_from(view, offset)
        except struct.error as exc:
            raise IndexFormatError("index header truncated") from exc
        if magic != _MAGIC or parts_n != _PARTS or not _PART_BITS <= bits <= _MAX_BITS:
            raise IndexFormatError("not an index of this version")
        if (key_size, slot_size) != (array("q").itemsize, array("I").itemsize):
            raise IndexFormatError("index written with other item sizes")
        offset += _HEADER.size
        slots_n = (1 << (bits - _PART_BITS)) + 1
        parts: list[array[int]] = []
        dirs: list[array[int]] = []
        for _ in range(_PARTS):
            try:
                n_keys, n_slots = _COUNTS.unpack_from(view, offset)
            except struct.error as exc:
                raise IndexFormatError("index truncated") from exc
            offset += _COUNTS.size
            end = offset + n_keys * key_size + n_slots * slot_size
            if n_slots != slots_n or end > len(view):
                raise IndexFormatError("index truncated or its directory has the wrong size")
            part, slots = array("q"), array("I")  # a memoryview initialiser would be iterated
            part.frombytes(view[offset : offset + n_keys * key_size])
            slots.frombytes(view[offset + n_keys * key_size : end])
            if slots[-1] != n_keys or max(slots) > n_keys:
                raise IndexFormatError("index directory points past its keys")
            parts.append(part)
            dirs.append(slots)
            offset = end
        return cls(parts, dirs, bits), offset

    def keys(self) -> Iterator[int]:
        """Every key, partition by partition (each partition sorted)."""
        for part, _ in self._table:
            yield from part

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"<DomainIndex {self._len} names, {self.nbytes} bytes>"

    @property
    def nbytes(self) -> int:
        """Bytes held by the index: keys, directories, array headers, the table and its pairs."""
        arrays = sum(sys.getsizeof(part) + sys.getsizeof(slots) for part, slots in self._table)
        return arrays + sys.getsizeof(self._table) + _PARTS * sys.getsizeof((0, 0))


class DomainIndexBuilder:
    """Accumulates names (streamed, never kept as strings) and produces a ``DomainIndex``.

    Feed whole batches with ``add_many`` where you can: hashing is then a C-level ``map``.
    """

    __slots__ = ("_parts", "_pending")

    def __init__(self) -> None:
        self._pending: list[int] = []
        self._parts = [array("q") for _ in range(_PARTS)]

    def add(self, name: str | bytes) -> None:
        """Add one name."""
        self._pending.append(name_key(name))
        if len(self._pending) >= _FLUSH:
            self._flush()

    def add_many(self, names: Iterable[str | bytes]) -> None:
        """Add every name of ``names``; a large iterable is consumed in bounded slices."""
        keys = map(name_key, names)
        while True:
            pending = self._pending
            before = len(pending)
            pending.extend(islice(keys, _FLUSH))
            added = len(pending) - before
            if len(pending) >= _FLUSH:
                self._flush()
            if added < _FLUSH:
                return

    def _flush(self) -> None:
        """Sort the buffered keys and append each partition's share to that partition."""
        batch = self._pending
        self._pending = []
        batch.sort()
        cuts = [0, *map(bisect_left, repeat(batch), _PART_BOUNDS), len(batch)]
        for part, lo, hi in zip(self._parts, cuts, cuts[1:], strict=False):
            if lo != hi:
                part.fromlist(batch[lo:hi])

    def finish(self) -> DomainIndex:
        """Build the index; the builder is empty (and reusable) afterwards."""
        self._flush()
        parts, self._parts = self._parts, [array("q") for _ in range(_PARTS)]
        bits = min(max((sum(map(len, parts)) // _SLOT_TARGET).bit_length(), _PART_BITS), _MAX_BITS)
        width = 1 << (64 - bits)
        dirs: list[array[int]] = []
        for i, part in enumerate(parts):
            values = sorted(part)  # timsort merges the pre-sorted runs of the flushes
            if any(map(eq, values, islice(values, 1, None))):
                values = sorted(set(values))
            parts[i] = array("q", values)  # exact size (the grown one is ~6 % too big)
            lo = _PART_BOUNDS[i - 1] if i else -(1 << 63)
            slots = array("I", map(bisect_left, repeat(values), range(lo, lo + _PART_WIDTH, width)))
            slots.append(len(values))
            dirs.append(slots)
        return DomainIndex(parts, dirs, bits)


def trim_heap() -> bool:
    """Hand freed heap pages back to the kernel (glibc ``malloc_trim``); False if unavailable.

    Why: a build frees batches, sort lists and partition buffers, and glibc keeps most of that
    memory mapped (its mmap threshold has grown past those sizes by then): ~6 MB of RSS for a
    1M-name list that nothing uses any more. Costs about a millisecond; ``ctypes`` is imported
    only here.
    """
    try:
        import ctypes

        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (ImportError, OSError, AttributeError):  # not glibc (musl, macOS) or no ctypes
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    return bool(malloc_trim(0))
