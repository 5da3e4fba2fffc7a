"""Three-way merge of a policy by top-level section: the MSP's bundle, the local admin's edits.

Why three-way: the MSP's new bundle must not silently undo what the office admin changed in
the sections the admin owns, and the admin must not be able to keep an old copy of a section
the MSP locked. With ``base`` (the policy of the last applied bundle) we can tell who changed
what since then:

- a locked section: the remote (MSP) version, always;
- an unlocked section changed only remotely: remote; changed only locally: local;
- changed on both sides to different values: keep local and report a conflict, never
  overwrite silently.

The output keeps each section's text (comments included) from the side it came from; if that
text does not re-read to the same data (flow-style documents, say), the merged data is dumped
plainly instead. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from policies.errors import PolicyLoadError
from policies.yaml_source import load_yaml

_ABSENT: Any = object()  # a section that one side does not have (deleted or never added)
_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:(\s|$)")


@dataclass(frozen=True)
class Conflict:
    """A section both sides changed differently since the last bundle; local was kept."""

    section: str
    base: Any
    local: Any
    remote: Any

    def as_json(self) -> dict[str, Any]:
        def show(value: Any) -> Any:
            return None if value is _ABSENT else value

        return {
            "section": self.section,
            "base": show(self.base),
            "local": show(self.local),
            "remote": show(self.remote),
        }


@dataclass(frozen=True)
class MergeResult:
    text: str
    conflicts: tuple[Conflict, ...]
    kept_local: tuple[str, ...]  # unlocked sections taken from the local policy


def _sections(text: str | None, name: str) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    data, _, problems = load_yaml(text, name)
    if problems:
        raise PolicyLoadError("\n".join(str(p) for p in problems))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PolicyLoadError(
            f"{name}: a policy is a mapping of sections, not {type(data).__name__}"
        )
    return data


def split_sections(text: str) -> tuple[str, dict[str, str]]:
    """The text before the first top-level key, and each top-level key's text.

    A section's text starts with the comment lines right above its key, so an explanatory
    comment travels with its section.
    """
    lines = text.splitlines(keepends=True)
    keys = [(i, m.group(1)) for i, ln in enumerate(lines) if (m := _TOP_KEY.match(ln))]
    starts: list[int] = []
    previous = -1
    for index, _ in keys:
        start = index
        while start - 1 > previous and lines[start - 1].startswith("#"):
            start -= 1
        starts.append(start)
        previous = index
    header = "".join(lines[: starts[0]]) if starts else text
    chunks: dict[str, str] = {}
    for n, (_, key) in enumerate(keys):
        end = starts[n + 1] if n + 1 < len(keys) else len(lines)
        chunk = "".join(lines[starts[n] : end])
        chunks[key] = chunk if chunk.endswith("\n") else chunk + "\n"
    return header, chunks


def merge_policy(
    base: str | None, local: str | None, remote: str, locked: Iterable[str]
) -> MergeResult:
    """Merge ``remote`` (the new bundle's policy) into ``local`` (the live policy).

    ``base`` is the policy of the last applied bundle (None before the first one: then every
    local section that differs from the remote one counts as a local change). Raises
    PolicyLoadError when a text is not a YAML mapping.
    """
    locked_set = set(locked)
    b = _sections(base, "base policy")
    lo = _sections(local, "live policy")
    r = _sections(remote, "bundle policy")
    order = list(r) + [k for k in lo if k not in r]
    chosen: dict[str, str] = {}  # section -> "local" | "remote"
    conflicts: list[Conflict] = []
    for key in order:
        bv, lv, rv = b.get(key, _ABSENT), lo.get(key, _ABSENT), r.get(key, _ABSENT)
        if key in locked_set or lv in (bv, rv):
            chosen[key] = "remote"
        elif rv == bv:
            chosen[key] = "local"
        else:
            chosen[key] = "local"
            conflicts.append(Conflict(key, bv, lv, rv))
    merged = {
        k: (lo if side == "local" else r)[k]
        for k, side in chosen.items()
        if k in (lo if side == "local" else r)
    }
    text = _render(merged, chosen, local, remote)
    kept = tuple(
        k for k, side in chosen.items() if side == "local" and k in lo and lo[k] != r.get(k)
    )
    return MergeResult(text, tuple(conflicts), kept)


def _render(merged: dict[str, Any], chosen: dict[str, str], local: str | None, remote: str) -> str:
    """The merged policy as text: each section's own lines where that reads back the same."""
    if all(side == "remote" for side in chosen.values()):
        return remote
    remote_header, remote_chunks = split_sections(remote)
    _, local_chunks = split_sections(local or "")
    parts = [remote_header]
    for key in merged:
        chunks = local_chunks if chosen[key] == "local" else remote_chunks
        if key not in chunks:
            parts = []
            break
        parts.append(chunks[key])
    text = "".join(parts)
    if parts:
        try:
            if _sections(text, "merged policy") == merged:
                return text
        except PolicyLoadError:
            pass
    return yaml.safe_dump(merged, sort_keys=False, allow_unicode=True, default_flow_style=False)
