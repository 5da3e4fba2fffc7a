"""Validation context: collects every problem with its position instead of stopping at one.

The section parsers in ``policies.loader`` call these helpers; each helper returns None (and
records a problem) when a value is unusable, so parsing can carry on and report the rest.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

from policies.errors import Problem
from policies.schema import allowed_keys, required_keys
from policies.yaml_source import Path, SourceMap, format_path

# Text that ends up inside nft strings (comments, log prefixes): printable, no quotes or
# backslashes, so it can never break out of the quoted string.
_SAFE_TEXT = re.compile(r"^[^\"\\\x00-\x1f\x7f]*$")


def suggest(word: str, choices: Iterable[str]) -> str:
    """ "; did you mean 'x'?" when something close exists, else an empty string."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f"; did you mean '{match[0]}'?" if match else ""


def type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "text", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


class Checker:
    def __init__(self, source: SourceMap) -> None:
        self.source = source
        self.problems: list[Problem] = []

    # -- reporting -------------------------------------------------------------------------
    def error(self, path: Path, message: str, *, key: bool = False) -> None:
        self.problems.append(Problem(self.source.at(path, key=key), format_path(path), message))

    def warn(self, path: Path, message: str) -> None:
        self.problems.append(
            Problem(self.source.at(path), format_path(path), message, severity="warning")
        )

    @property
    def failed(self) -> bool:
        return any(p.severity == "error" for p in self.problems)

    # -- shapes ----------------------------------------------------------------------------
    def mapping(self, value: Any, path: Path, kind: str) -> dict[str, Any] | None:
        """A mapping whose keys are checked against the schema's table for ``kind``."""
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {type_name(value)}")
            return None
        allowed = allowed_keys(kind)
        for key in value:
            if key not in allowed:
                self.error(
                    (*path, key),
                    f"unknown key '{key}' (allowed: {', '.join(allowed)}){suggest(key, allowed)}",
                    key=True,
                )
        for key in required_keys(kind):
            if key not in value:
                self.error(path, f"missing required key '{key}'")
        return {k: v for k, v in value.items() if k in allowed}

    def named_mapping(self, value: Any, path: Path) -> dict[str, Any]:
        """A section like ``zones:`` that maps names to definitions (may be absent)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping of names, got {type_name(value)}")
            return {}
        return value

    def text(self, value: Any, path: Path, *, max_len: int = 200) -> str | None:
        if not isinstance(value, str):
            self.error(path, f"expected text, got {type_name(value)}")
            return None
        if len(value) > max_len:
            self.error(path, f"too long ({len(value)} characters, at most {max_len})")
            return None
        if not _SAFE_TEXT.match(value):
            self.error(path, "must not contain quotes, backslashes or control characters")
            return None
        return value

    def boolean(self, value: Any, path: Path) -> bool | None:
        if not isinstance(value, bool):
            self.error(path, f"expected true or false, got {type_name(value)}")
            return None
        return value

    def name(self, value: Any, path: Path, pattern: str, what: str, *, key: bool = False) -> bool:
        if not isinstance(value, str) or not re.match(pattern, value):
            self.error(
                path,
                f"invalid {what} {value!r} (must match {pattern})",
                key=key,
            )
            return False
        return True

    def items(self, value: Any, path: Path, *, scalar: bool = True) -> list[tuple[Path, Any]]:
        """A list (or a single scalar standing for a one-item list) with each item's path."""
        if value is None:
            return []
        if isinstance(value, list):
            return [((*path, i), v) for i, v in enumerate(value)]
        if scalar and not isinstance(value, dict):
            return [(path, value)]
        self.error(path, f"expected a list, got {type_name(value)}")
        return []

    def strings(self, value: Any, path: Path) -> list[tuple[Path, str]]:
        out: list[tuple[Path, str]] = []
        for p, v in self.items(value, path):
            if isinstance(v, str):
                out.append((p, v))
            else:
                self.error(p, f"expected text, got {type_name(v)}")
        return out
