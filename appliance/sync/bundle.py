"""Assemble what the MSP signs for a site: the policy text and every file it references.

The appliance resolves the policy's relative paths under its own sync directory, so the
bundle must carry each referenced file under the same relative path; absolute paths and
paths that climb out (``..``) are refused, because they would name files on the appliance
the MSP does not control.

An MSP baseline is layered section by section: a top-level section of the site policy
replaces the baseline's section of the same name, the baseline's other sections are kept.
The layered text is made of the original lines of both files (comments included), so a
validation problem can be reported at its line and column in the file the operator edits.

The policy is validated exactly as the appliance will see it (files materialised in a
temporary directory), before anything is signed.

The signed-metadata API (``make_bundle``, ``verify_bundle``, ``check_blob``, ``BundleMeta``)
lives in ``metadata`` and is re-exported here.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from appliance.sync.metadata import (
    BundleMeta,
    check_blob,
    make_bundle,
    safe_relative_path,
    verify_bundle,
)
from policies.errors import Location, PolicyLoadError, PolicyValidationError, Problem
from policies.feed_blob import encode_feed
from policies.feeds import FeedData, load_feed
from policies.loader import parse_policy
from policies.yaml_source import SourceMap, format_path, load_yaml

__all__ = [
    "AssembledPolicy",
    "BundleMeta",
    "assemble_policy",
    "check_blob",
    "make_bundle",
    "verify_bundle",
]

YamlPath = tuple[str | int, ...]


@dataclass(frozen=True)
class AssembledPolicy:
    """A validated policy ready to sign: its text and its files by relative path."""

    text: str
    files: dict[str, bytes]
    baseline: str | None  # the baseline's name (file stem), informational in the bundle
    # the IP feeds among ``files``, parsed while validating (policies.feed_blob), so
    # appliances load them instead of parsing 100,000 lines each
    parsed: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class _Source:
    path: Path
    text: str
    data: dict[str, Any]
    where: SourceMap


@dataclass(frozen=True)
class _Segment:
    """Lines [first, first+count) of the layered text are lines from ``source``."""

    first: int
    count: int
    source: _Source
    source_first: int


def _read(path: Path) -> _Source:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyLoadError(f"{path}: cannot read policy: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise PolicyLoadError(f"{path}: policy is not UTF-8 text ({exc.reason})") from exc
    data, where, problems = load_yaml(text, str(path))
    if problems:
        raise PolicyValidationError(problems)
    if not isinstance(data, dict):
        loc = where.at(())
        raise PolicyValidationError([Problem(loc, "", "a policy must be a mapping of sections")])
    return _Source(path, text, data, where)


def _file_refs(value: Any, path: YamlPath) -> Iterator[tuple[YamlPath, str]]:
    """Every file name the policy schema reads: ``files:`` lists anywhere, ``anomaly.feeds``."""
    if isinstance(value, dict):
        for key, item in value.items():
            sub = (*path, key)
            if (key == "files" or sub == ("anomaly", "feeds")) and isinstance(item, list):
                yield from (((*sub, i), n) for i, n in enumerate(item) if isinstance(n, str))
            else:
                yield from _file_refs(item, sub)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _file_refs(item, (*path, i))


def _collect_files(sections: dict[str, _Source]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    origin: dict[str, Path] = {}
    problems: list[Problem] = []
    for name, src in sections.items():
        for ypath, ref in _file_refs(src.data[name], (name,)):
            loc, field = src.where.at(ypath), format_path(ypath)
            if not safe_relative_path(ref):
                why = "a bundled file must be a relative path inside the policy's directory"
                problems.append(Problem(loc, field, f"{ref!r}: {why} (no leading '/', no '..')"))
                continue
            try:
                data = (src.path.parent / ref).read_bytes()
            except OSError as exc:
                problems.append(Problem(loc, field, f"cannot read {ref}: {exc.strerror or exc}"))
                continue
            if ref in files and files[ref] != data:
                why = f"differs from the file of the same name next to {origin[ref]}"
                problems.append(Problem(loc, field, f"{ref} {why}; rename one of them"))
                continue
            files[ref], origin[ref] = data, src.path
    if problems:
        raise PolicyValidationError(problems)
    return files


def _section_lines(src: _Source) -> dict[str, tuple[int, int]] | None:
    """0-based [start, end) line range of each top-level section, or None if the document
    is not block style (then its lines cannot be moved around as whole sections)."""
    starts = [(src.where.keys[(k,)].line - 1, k) for k in src.data]
    if any(src.where.keys[(k,)].column != 1 for k in src.data):
        return None
    if [s for s, _ in starts] != sorted({s for s, _ in starts}):
        return None
    total = len(src.text.splitlines())
    ends = [s for s, _ in starts[1:]] + [total]
    return {k: (s, e) for (s, k), e in zip(starts, ends, strict=True)}


def _layer(site: _Source, base: _Source) -> tuple[str, list[_Segment], dict[str, _Source]]:
    owner = {k: base for k in base.data if k not in site.data} | {k: site for k in site.data}
    ranges = {id(site): _section_lines(site), id(base): _section_lines(base)}
    lines: list[str] = []
    segments: list[_Segment] = []
    for name in [k for k in base.data if k not in site.data] + list(site.data):
        src = owner[name]
        span = ranges[id(src)]
        if span is None:
            raise PolicyLoadError(
                f"{src.path}: layering needs block-style top-level sections "
                "(one 'section:' per line at column 1), not a flow mapping"
            )
        start, end = span[name]
        chunk = src.text.splitlines()[start:end]
        segments.append(_Segment(len(lines), len(chunk), src, start))
        lines.extend(chunk)
    return "\n".join(lines) + "\n", segments, owner


def _relocate(problem: Problem, name: str, segments: list[_Segment]) -> Problem:
    loc = problem.location
    if loc is None or loc.file != name:
        return problem
    for seg in segments:
        if seg.first <= loc.line - 1 < seg.first + seg.count:
            line = seg.source_first + (loc.line - 1 - seg.first) + 1
            return replace(problem, location=Location(str(seg.source.path), line, loc.column))
    return problem


def _validate(
    text: str, name: str, files: dict[str, bytes], segments: list[_Segment]
) -> dict[str, bytes]:
    """Validate as the appliance will; returns the parsed form of each IP feed read."""
    parsed: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="edgeguard-sign-") as tmp:
        for rel, data in files.items():
            target = Path(tmp) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

        def read_feed(path: Path) -> FeedData:
            feed = load_feed(path)
            relative = path.resolve().relative_to(Path(tmp).resolve()).as_posix()
            if relative in files:
                parsed[relative] = encode_feed(feed)
            return feed

        try:
            parse_policy(text, name, base_dir=Path(tmp), read_feed=read_feed)
        except PolicyValidationError as exc:
            raise PolicyValidationError(
                [_relocate(p, name, segments) for p in exc.problems]
            ) from None
        except PolicyLoadError as exc:
            match = re.match(rf"{re.escape(name)}:(\d+):(\d+): (.*)", str(exc), re.S)
            if match and segments:
                at = Location(name, int(match[1]), int(match[2]))
                p = _relocate(Problem(at, "", match[3]), name, segments)
                raise PolicyLoadError(str(p)) from None
            raise
    return parsed


def assemble_policy(policy: Path, baseline: Path | None = None) -> AssembledPolicy:
    """Read, layer and validate a site policy; raises PolicyLoadError/PolicyValidationError
    whose problems point at file:line:column of ``policy`` or ``baseline``."""
    site = _read(Path(policy))
    if baseline is None:
        files = _collect_files({k: site for k in site.data})
        parsed = _validate(site.text, str(site.path), files, [])
        return AssembledPolicy(site.text, files, None, parsed)
    base = _read(Path(baseline))
    text, segments, owner = _layer(site, base)
    files = _collect_files(owner)
    name = f"{site.path} + {base.path}"
    parsed = _validate(text, name, files, segments)
    return AssembledPolicy(text, files, base.path.stem, parsed)
