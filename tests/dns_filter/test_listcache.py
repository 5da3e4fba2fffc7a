"""ListCache: a compiled list read back from disk answers exactly like the list parsed again,
and a cache file is used only while the list file, the code and the hash seed are the same."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from dns_filter.listcache import MAX_AGE_DAYS, ListCache, compile_list
from dns_filter.lists import ListError
from dns_filter.matcher import Matcher, MatcherError

LIST = """\
! Title: mixed test list
||ads.example^
||tracker.example^$important
@@||ok.ads.example^
*.wild.example
/^ad[0-9]+\\./
0.0.0.0 hosts.example
this is junk
"""
PROBES = [
    "ads.example", "a.b.ads.example", "ok.ads.example", "x.ok.ads.example", "tracker.example",
    "wild.example", "a.wild.example", "ad12.other.example", "hosts.example", "clean.example",
]  # fmt: skip


def answers(matcher: Matcher) -> list[tuple[str, str, str] | None]:
    out: list[tuple[str, str, str] | None] = []
    for name in PROBES:
        m = matcher.match(name)
        out.append(None if m is None else (m.verdict, m.list_name, m.rule))
    return out


def build(path: Path, cache: ListCache | None, kind: str = "block") -> Matcher:
    return Matcher.build([("mixed", path, kind)], cache)


@pytest.fixture
def listfile(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.txt"
    path.write_text(LIST)
    return path


def test_a_cached_list_answers_like_a_parsed_one(tmp_path: Path, listfile: Path) -> None:
    cache = ListCache(tmp_path / "cache")
    fresh = build(listfile, None)
    first = build(listfile, cache)
    second = build(listfile, cache)
    assert (cache.misses, cache.hits, cache.problems) == (1, 1, [])
    assert answers(second) == answers(first) == answers(fresh)
    assert answers(fresh)[0] == ("block", "mixed", "ads.example")
    assert second.lists["mixed"] == fresh.lists["mixed"]  # summary, skip reasons, line numbers
    assert fresh.lists["mixed"].skipped == 1


def test_kind_is_part_of_the_key(tmp_path: Path, listfile: Path) -> None:
    cache = ListCache(tmp_path / "cache")
    build(listfile, cache)
    allowed = build(listfile, cache, kind="allow")
    assert cache.misses == 2
    assert allowed.match("ads.example") is not None
    assert allowed.match("ads.example").verdict == "allow"  # type: ignore[union-attr]


def test_an_edited_list_is_parsed_again(tmp_path: Path, listfile: Path) -> None:
    cache = ListCache(tmp_path / "cache")
    build(listfile, cache)
    # Same size and the old mtime put back: only the ctime (and content) tell.
    st = listfile.stat()
    listfile.write_text(LIST.replace("||ads.example^", "||ads.exampl3^"))
    os.utime(listfile, ns=(st.st_atime_ns, st.st_mtime_ns))
    matcher = build(listfile, cache)
    assert cache.misses == 2 and cache.hits == 0
    assert matcher.match("ads.example") is None
    assert matcher.match("ads.exampl3") is not None


def test_a_damaged_cache_file_is_rebuilt(tmp_path: Path, listfile: Path) -> None:
    cache = ListCache(tmp_path / "cache")
    expected = answers(build(listfile, cache))
    (file,) = (tmp_path / "cache").glob("*.idx")
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x40
    file.write_bytes(bytes(data))
    assert answers(build(listfile, cache)) == expected
    assert cache.misses == 2 and "damaged" in cache.problems[0]
    assert answers(build(listfile, cache)) == expected  # rewritten: a hit now
    assert cache.hits == 1
    file.write_bytes(file.read_bytes()[:100])  # truncated
    assert answers(build(listfile, cache)) == expected
    assert cache.misses == 3


@pytest.mark.parametrize(
    ("inner", "problem"),
    [
        (b"\xff\xff\x00\x00{}", "unreadable"),  # header length past the end
        (b"\x04\x00\x00\x00null", "unreadable"),  # header not an object
        (b"\x02\x00\x00\x00{}", None),  # a header of another version: an ordinary miss
    ],
)
def test_an_intact_but_unreadable_cache_file_is_rebuilt(
    tmp_path: Path, listfile: Path, inner: bytes, problem: str | None
) -> None:
    """A checksum that matches over nonsense (a bug, or a hand-made file) is not trusted."""
    cache = ListCache(tmp_path / "cache")
    expected = answers(build(listfile, cache))
    (file,) = (tmp_path / "cache").glob("*.idx")
    body = b"EGLIST1\n" + inner
    file.write_bytes(body + zlib.crc32(body).to_bytes(4, "little"))
    assert answers(build(listfile, cache)) == expected
    assert cache.misses == 2
    assert [p.split(" (")[0].split(": ")[1] for p in cache.problems] == (
        [problem] if problem else []
    )
    (header_wrong,) = (tmp_path / "cache").glob("*.idx")  # rewritten whole: a hit next time
    build(listfile, cache)
    assert cache.hits == 1 and header_wrong == file


def test_cache_files_are_private_and_old_ones_pruned(tmp_path: Path, listfile: Path) -> None:
    directory = tmp_path / "cache"
    build(listfile, ListCache(directory))
    (file,) = directory.glob("*.idx")
    assert file.stat().st_mode & 0o077 == 0
    stale = directory / "gone.idx"
    stale.write_bytes(b"old")
    old = time.time() - (MAX_AGE_DAYS + 1) * 86400
    os.utime(stale, (old, old))
    os.utime(file, (old, old))
    cache = ListCache(directory)  # prunes on creation
    assert not stale.exists() and not file.exists()
    build(listfile, cache)
    assert cache.misses == 1 and file.exists()


def test_a_missing_list_still_raises(tmp_path: Path) -> None:
    cache = ListCache(tmp_path / "cache")
    with pytest.raises(MatcherError, match=r"nope\.txt"):
        build(tmp_path / "nope.txt", cache)
    with pytest.raises(ListError):
        compile_list(tmp_path / "nope.txt", "block")


SEEDED = """
import sys
from pathlib import Path
from dns_filter.listcache import ListCache
from dns_filter.matcher import Matcher
cache = ListCache(Path(sys.argv[1]))
m = Matcher.build([("l", sys.argv[2], "block")], cache)
print(cache.hits, cache.misses, m.is_blocked("a.ads.example"), m.is_blocked("clean.example"))
"""


def test_another_hash_seed_does_not_use_the_file(tmp_path: Path, listfile: Path) -> None:
    """Keys are seeded hashes: a process with another seed must parse again (and be right)."""

    def run(seed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": seed}
        args = [sys.executable, "-c", SEEDED, str(tmp_path / "cache"), str(listfile)]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=True)
        return done.stdout.strip()

    assert run("1234") == "0 1 True False"
    assert run("1234") == "1 0 True False"
    assert run("4321") == "0 1 True False"
