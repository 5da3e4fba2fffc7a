"""Compiled lists, and a disk cache of them so a restart does not parse a million lines again.

Why: parsing and indexing a 1M-name list takes ~0.6 s here (several seconds on a Pi) at every
start, before the first query can be answered. A compiled list (its summary, its four indexes
and its regexes) is ~8.3 bytes per name on disk and reads back in a few milliseconds.

A cache file is used only when all of these still hold, else the list is compiled again and the
file rewritten:

* the list file is the one it was built from: same device, inode, size, mtime and ctime (ctime
  cannot be set back by hand, so an in-place edit that restores the mtime is still seen);
* the code that parses and indexes is the code that wrote it (a digest of those modules);
* this process hashes names as the writer did (a probe key, see ``dns_filter.index``: keys
  are the per-process-seeded ``hash()``; the appliance pins the seed per box);
* the bytes are intact (CRC-32 over the file: an SD card may return damaged blocks).

Files are written to a temporary name and renamed, never fsynced: a file torn by a power cut
fails the checksum and is rebuilt, which is cheaper than an fsync of 8 MB at every change.
Files not used for ``MAX_AGE_DAYS`` are deleted, so lists no longer subscribed do not pile up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import struct
import sys
import time
import zlib
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dns_filter.index import DomainIndex, DomainIndexBuilder, IndexFormatError, name_key
from dns_filter.lists import ListSummary, parse_list

__all__ = ["CompiledList", "ListCache", "compile_list"]

MAX_AGE_DAYS = 30
_MAGIC = b"EGLIST1\n"
_LENGTH = struct.Struct("<I")  # of the JSON header that follows the magic
_CRC = struct.Struct("<I")  # of everything before it, at the end
_PROBE = b"edgeguard-index-probe.example"


@dataclass(slots=True)
class CompiledList:
    """One list, ready for the matcher. Index pairs are (block, allow)."""

    summary: ListSummary
    names: tuple[DomainIndex, DomainIndex]
    wildcards: tuple[DomainIndex, DomainIndex]
    regexes: tuple[list[str], list[str]]


@dataclass(slots=True)
class _IndexSink:
    """``RuleSink`` that feeds index builders; an allow list turns every rule into an allow."""

    allow_list: bool
    names: tuple[DomainIndexBuilder, DomainIndexBuilder] = field(
        default_factory=lambda: (DomainIndexBuilder(), DomainIndexBuilder())
    )
    wildcards: tuple[DomainIndexBuilder, DomainIndexBuilder] = field(
        default_factory=lambda: (DomainIndexBuilder(), DomainIndexBuilder())
    )
    regexes: tuple[list[str], list[str]] = field(default_factory=lambda: ([], []))

    def block(self, names: Sequence[str | bytes]) -> None:
        self.names[self.allow_list].add_many(names)

    def allow(self, names: Sequence[str | bytes]) -> None:
        self.names[1].add_many(names)

    def block_suffix(self, names: Sequence[str | bytes]) -> None:
        self.wildcards[self.allow_list].add_many(names)

    def allow_suffix(self, names: Sequence[str | bytes]) -> None:
        self.wildcards[1].add_many(names)

    def regex_block(self, pattern: str) -> None:
        self.regexes[self.allow_list].append(pattern)

    def regex_allow(self, pattern: str) -> None:
        self.regexes[1].append(pattern)


def compile_list(
    source: str | os.PathLike[str] | Iterable[str] | Iterable[bytes], kind: str
) -> CompiledList:
    """Parse and index one list; ``kind="allow"`` makes every rule an allow rule.

    Raises ``ListError`` when a file cannot be read; bad lines only count in the summary.
    """
    sink = _IndexSink(allow_list=kind == "allow")
    summary = parse_list(source, sink)
    return CompiledList(
        summary,
        (sink.names[0].finish(), sink.names[1].finish()),
        (sink.wildcards[0].finish(), sink.wildcards[1].finish()),
        sink.regexes,
    )


def _private(path: str, flags: int) -> int:
    """Opener for ``open``: a new file readable by its owner only (it reveals the lists)."""
    return os.open(path, flags, 0o600)


def _times(st: os.stat_result) -> tuple[int, int]:
    return st.st_mtime_ns, st.st_ctime_ns


def _code_digest() -> str:
    """Digest of the modules whose behaviour a cache file captures (parser, keys, format)."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for module in ("lists.py", "index.py", "listcache.py"):
        try:
            digest.update((here / module).read_bytes())
        except OSError:  # not installed as files (zipapp): fall back on the interpreter build
            digest.update(sys.version.encode())
    return digest.hexdigest()[:32]


class ListCache:
    """Compiled lists on disk, one file per (list file, kind), in ``directory``.

    Only give a process one when its hash seed is pinned (the appliance's ``hashseed``): with
    a random seed every start would miss and write the file again.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.hits = 0
        self.misses = 0
        self.problems: list[str] = []  # why a file was not used or not written, for the log
        self._code = _code_digest()
        self._probe = name_key(_PROBE)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._prune()

    def compiled(self, path: Path, kind: str) -> CompiledList:
        """``path`` compiled as a ``kind`` list: from the cache if valid, else parsed (and
        stored). Raises ``ListError`` when the list file cannot be read."""
        try:
            st = os.stat(path)
        except OSError:
            return compile_list(path, kind)  # parse_list raises the ListError with the reason
        real = os.path.realpath(path)
        digest = hashlib.sha256(f"{real}\0{kind}".encode()).hexdigest()[:32]
        file = self.directory / f"{digest}.idx"
        meta: dict[str, object] = {
            "code": self._code,
            "hash": [sys.hash_info.algorithm, sys.hash_info.width, self._probe],
            "byteorder": sys.byteorder,
            "source": [real, kind, st.st_dev, st.st_ino, st.st_size, *_times(st)],
        }
        cached = self._load(file, meta)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        compiled = compile_list(path, kind)  # stat taken before: a change meanwhile is seen next
        self._store(file, meta, compiled)
        return compiled

    def _load(self, file: Path, meta: dict[str, object]) -> CompiledList | None:
        """The compiled list in ``file`` if it is intact and ``meta`` matches, else None.

        The file is memory-mapped and the arrays copied straight out of the mapping: reading
        it into one 8 MB ``bytes`` first left ~2.5 MB more RSS after load (glibc raises its
        mmap threshold when such a block is freed, and later big allocations stay on the heap).
        """
        try:
            with open(file, "rb") as f:
                if os.fstat(f.fileno()).st_size < len(_MAGIC) + _CRC.size:
                    self.problems.append(f"{file.name}: damaged (too short), compiled again")
                    return None
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                    compiled = self._parse(file, memoryview(mapped), meta)
        except FileNotFoundError:
            return None
        except (OSError, BufferError, ValueError) as exc:  # ValueError: mmap of an empty file
            self.problems.append(f"{file.name}: cannot read ({exc}), compiled again")
            return None
        if compiled is not None:
            with contextlib.suppress(OSError):
                os.utime(file)  # in use: keep it from being pruned
        return compiled

    def _parse(self, file: Path, data: memoryview, meta: dict[str, object]) -> CompiledList | None:
        with data:  # released before the mapping closes
            body = data[: -_CRC.size]
            try:
                crc = _CRC.unpack_from(data, len(body))[0]
                if data[: len(_MAGIC)] != _MAGIC or crc != zlib.crc32(body):
                    self.problems.append(f"{file.name}: damaged (checksum), compiled again")
                    return None
                (size,) = _LENGTH.unpack_from(body, len(_MAGIC))
                offset = len(_MAGIC) + _LENGTH.size + size
                if offset > len(body):
                    raise ValueError("header longer than the file")
                header = json.loads(bytes(body[len(_MAGIC) + _LENGTH.size : offset]))
                if not isinstance(header, dict):
                    raise TypeError("header is not an object")
                if {k: header.get(k) for k in meta} != meta:
                    return None  # another list version, code version or hash seed: not an error
                indexes = []
                for _ in range(4):
                    index, offset = DomainIndex.from_bytes(body, offset)
                    indexes.append(index)
                summary = ListSummary(**header["summary"])
                summary.errors = [(int(n), str(reason)) for n, reason in summary.errors]
                block_re, allow_re = header["regexes"]
                regexes = ([str(p) for p in block_re], [str(p) for p in allow_re])
            except (
                IndexFormatError,
                ValueError,
                KeyError,
                TypeError,
                IndexError,
                struct.error,
            ) as exc:
                self.problems.append(f"{file.name}: unreadable ({exc}), compiled again")
                return None
            finally:
                body.release()
        return CompiledList(summary, (indexes[0], indexes[1]), (indexes[2], indexes[3]), regexes)

    def _store(self, file: Path, meta: dict[str, object], compiled: CompiledList) -> None:
        header = {**meta, "summary": asdict(compiled.summary), "regexes": compiled.regexes}
        text = json.dumps(header, separators=(",", ":")).encode()
        parts: list[bytes | array[int]] = [_MAGIC, _LENGTH.pack(len(text)), text]
        for index in (*compiled.names, *compiled.wildcards):
            parts += index.buffers()  # the arrays themselves: no 8 MB copy (see ``_load``)
        crc = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb", opener=_private) as f:
                f.writelines(parts)
                f.write(_CRC.pack(crc))
            os.replace(tmp, file)
        except OSError as exc:
            self.problems.append(f"{file.name}: not cached ({exc.strerror or exc})")
            tmp.unlink(missing_ok=True)

    def _prune(self) -> None:
        """Delete cache files (and stray temporary files) unused for ``MAX_AGE_DAYS``."""
        cutoff = time.time() - MAX_AGE_DAYS * 86400
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        for entry in entries:
            if not entry.name.endswith((".idx", ".tmp")):
                continue
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except OSError:
                continue
