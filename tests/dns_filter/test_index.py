"""DomainIndex: a set of names in 8 bytes each that must answer exactly like a Python set."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dns_filter.index import (
    DomainIndex,
    DomainIndexBuilder,
    IndexFormatError,
    name_key,
    trim_heap,
)


def test_membership_len_and_dedupe() -> None:
    index = DomainIndex.build(["a.com", "b.com", "a.com", b"c.com"])
    assert len(index) == 3
    assert "a.com" in index
    assert "c.com" in index
    assert b"b.com" in index
    assert "d.com" not in index
    assert "A.COM" not in index  # exact strings: the caller normalises
    assert 42 not in index
    assert None not in index


def test_empty_index() -> None:
    index = DomainIndex.build([])
    assert len(index) == 0
    assert "a.com" not in index
    assert index.nbytes > 0
    assert "0 names" in repr(index)


def test_str_and_bytes_share_keys() -> None:
    assert name_key("ads.example.com") == name_key(b"ads.example.com")


def test_contains_key_matches_contains() -> None:
    index = DomainIndex.build(f"n{i}.example.org" for i in range(1000))
    assert index.contains_key(name_key("n7.example.org"))
    assert not index.contains_key(name_key("n7.example.net"))


def test_sizes_around_the_batch_and_partition_thresholds() -> None:
    for count in (1, 15, 16, 17, 32_767, 32_768, 32_769, 70_001):
        names = [f"h{i}.t{i % 97}.example" for i in range(count)]
        index = DomainIndex.build(names + names[: count // 2])
        assert len(index) == count
        assert all(name in index for name in names[:: max(1, count // 500)])
        assert not any(f"x{name}" in index for name in names[:: max(1, count // 500)])


def test_compact_memory() -> None:
    count = 200_000
    index = DomainIndex.build(f"host{i}.example{i % 1000}.com" for i in range(count))
    # 8 bytes per key plus a directory of ~1 offset per 16 keys and a few array headers.
    assert index.nbytes < count * 8.5 + 8192


def test_builder_add_add_many_and_reuse() -> None:
    builder = DomainIndexBuilder()
    builder.add("one.example")
    builder.add_many(iter(["two.example", b"three.example"]))
    first = builder.finish()
    assert len(first) == 3
    builder.add("four.example")
    second = builder.finish()
    assert len(second) == 1
    assert "four.example" in second
    assert "one.example" not in second
    assert "four.example" not in first


def test_trim_heap_is_harmless() -> None:
    assert trim_heap() in (True, False)


_names = st.text(alphabet="abc.-", min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(members=st.sets(_names, max_size=300), probes=st.lists(_names, max_size=100))
def test_index_agrees_with_a_set(members: set[str], probes: list[str]) -> None:
    index = DomainIndex.build(members)
    assert len(index) == len(members)
    for name in members:
        assert name in index
    for name in probes:
        assert (name in index) == (name in members)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32), extra=st.integers(0, 5000))
def test_index_agrees_with_a_set_at_partition_scale(seed: int, extra: int) -> None:
    members = {f"{seed}-{i}.example" for i in range(40_000 + extra)}
    index = DomainIndex.build(members)
    assert len(index) == len(members)
    assert all(name in index for name in members)
    assert not any(f"{seed}-{i}.example" in index for i in range(-5000, 0))


def test_bytes_round_trip_answers_alike() -> None:
    names = [f"host{i}.example{i % 300}.net" for i in range(50_000)]
    index = DomainIndex.build(names)
    data = b"prefix" + index.to_bytes() + b"suffix"
    copy, end = DomainIndex.from_bytes(data, len(b"prefix"))
    assert data[end:] == b"suffix"
    assert len(copy) == len(index)
    assert list(copy.keys()) == list(index.keys())
    assert all(name in copy for name in names[::97])
    assert "host1.example2.net" not in copy  # 1 % 300 is 1, not 2
    empty, _ = DomainIndex.from_bytes(DomainIndex.build([]).to_bytes())
    assert len(empty) == 0 and "a.example" not in empty


def test_from_bytes_refuses_truncated_and_foreign_data() -> None:
    data = DomainIndex.build(f"n{i}.example" for i in range(5000)).to_bytes()
    for bad in (b"", data[:3], data[:40], data[:-1], b"XXXX" + data[4:]):
        with pytest.raises(IndexFormatError):
            DomainIndex.from_bytes(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=0, max_value=400))
def test_from_bytes_never_fails_otherwise(junk: bytes, at: int) -> None:
    """Damaged bytes give IndexFormatError or some index, never another exception."""
    data = bytearray(DomainIndex.build(["a.example", "b.example"]).to_bytes())
    data[at : at + len(junk)] = junk
    with contextlib.suppress(IndexFormatError):
        DomainIndex.from_bytes(bytes(data))
