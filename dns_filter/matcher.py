"""Decides, for a query name, whether a list blocks or allows it, and says which list and rule.

Semantics (the same for every list format, see ``dns_filter.lists``):

* a name entry (``example.com``, ``0.0.0.0 example.com``, ``||example.com^``) matches the name
  and every subdomain: ``a.b.example.com`` is looked up as ``a.b.example.com``,
  ``b.example.com`` and ``example.com``. Single labels (``com``) are never looked up: the parser
  refuses them, so they can never be listed;
* a wildcard (``*.example.com``) matches strict subdomains, not ``example.com`` itself;
* regex rules are searched in the lowercase name without its trailing dot, after the indexes
  (they are the slow part: each list's regexes are one alternation where the patterns allow);
* allow beats block: any allow match, in any list, wins over every block match. Among several
  matches of the same verdict, the first list added wins, and within it the longest name.

A ``Matcher`` is filled once and then only read. To change lists, build a new one and swap the
reference (the server's job): building never touches an existing matcher, so lookups on the old
one go on undisturbed meanwhile.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from dns_filter.errors import DnsFilterError
from dns_filter.index import DomainIndex, name_key, trim_heap
from dns_filter.listcache import CompiledList, ListCache, compile_list
from dns_filter.lists import ListSummary

__all__ = ["Match", "Matcher", "MatcherError", "Verdict"]

Verdict = Literal["block", "allow"]
ListSource = str | os.PathLike[str] | Iterable[str] | Iterable[bytes]

# A list with at most this many names (or wildcards) also has its keys in one set per verdict,
# shared by all such lists: a name none of whose keys is in that set skips all of them with one
# C-level test. Client groups load every category and service as its own small list; without
# this, a name not in the verdict cache cost one index lookup per list (12 µs for 64 lists).
SMALL_LIST = 4096

# Patterns that cannot sit inside a shared alternation: group references would point at the
# wrong group, duplicate group names do not compile, global flags must come first.
_UNCOMBINABLE = re.compile(r"\\[1-9]|\\g<|\(\?P[<=]|\(\?[aiLmsux]+\)")


class MatcherError(DnsFilterError):
    """A list could not be added (duplicate name, unknown kind, unreadable file)."""


@dataclass(slots=True)
class Match:
    """Why a name was blocked or allowed: verdict, list name, and the rule as matched.

    ``verdict`` is ``"block"`` or ``"allow"``; ``rule`` is the listed name (``example.com``),
    the wildcard (``*.example.com``) or the regex between slashes (``/ads[0-9]+\\./``).
    Plain ``str`` fields, not frozen: that is what ``dns_filter.resolver.Match`` (a protocol
    with settable attributes) accepts. Treat it as read-only.
    """

    verdict: str
    list_name: str
    rule: str


class _RegexRules:
    """One list's regexes: one alternation answers "any?", single patterns then say which."""

    __slots__ = ("_any", "_each", "_rest")

    def __init__(self, patterns: Sequence[str]) -> None:
        unique = list(dict.fromkeys(patterns))
        each = [(p, re.compile(p)) for p in unique]
        shared = [p for p in unique if not _UNCOMBINABLE.search(p)]
        self._any: re.Pattern[str] | None = None
        if shared:
            try:
                self._any = re.compile("|".join(f"(?:{p})" for p in shared))
            except re.error:  # pragma: no cover - each pattern compiled alone already
                shared = []
        in_any = set(shared)
        self._each = [(p, c) for p, c in each if p in in_any]
        self._rest = [(p, c) for p, c in each if p not in in_any]

    def search(self, name: str) -> str | None:
        """The first pattern found in ``name``, or None."""
        if self._any is not None and self._any.search(name):
            for pattern, compiled in self._each:
                if compiled.search(name):
                    return pattern
        for pattern, compiled in self._rest:
            if compiled.search(name):
                return pattern
        return None


class Matcher:
    """Block/allow decisions over named lists (see the module docstring for the semantics)."""

    def __init__(self) -> None:
        self._summaries: dict[str, ListSummary] = {}
        # Per verdict (0 = block, 1 = allow): only the non-empty indexes, in list order, each
        # with the most labels a name of its list has (longer parents are not looked up).
        self._names: tuple[list[tuple[str, DomainIndex, int]], ...] = ([], [])
        self._wildcards: tuple[list[tuple[str, DomainIndex, int]], ...] = ([], [])
        # The same without the small lists, and the small lists' keys (see SMALL_LIST): a name
        # with no key in the set is looked up in the big lists only. Skipping lists that cannot
        # match keeps the order, so the answer is the same.
        self._big_names: tuple[list[tuple[str, DomainIndex, int]], ...] = ([], [])
        self._big_wildcards: tuple[list[tuple[str, DomainIndex, int]], ...] = ([], [])
        self._small_names: tuple[set[int], set[int]] = (set(), set())
        self._small_wildcards: tuple[set[int], set[int]] = (set(), set())
        self._regexes: tuple[list[tuple[str, _RegexRules]], ...] = ([], [])
        self._max_labels = 0
        self._nbytes = 0

    @classmethod
    def build(
        cls, lists: Iterable[tuple[str, ListSource, str]], cache: ListCache | None = None
    ) -> Matcher:
        """A new matcher from ``(name, source, kind)`` triples, e.g. to swap in atomically.

        With ``cache``, list files are compiled through it (see ``dns_filter.listcache``).
        """
        matcher = cls()
        for name, source, kind in lists:
            matcher.add_list(name, source, kind, cache)
        return matcher

    def add_list(
        self, name: str, source: ListSource, kind: str = "block", cache: ListCache | None = None
    ) -> ListSummary:
        """Parse ``source`` (a path, or an iterable of lines) as list ``name``; its summary.

        ``kind="allow"`` makes every rule of the list an allow rule. Lists are matched in the
        order they were added. Raises ``MatcherError`` for a duplicate name, an unknown kind
        or an unreadable file; bad lines are only counted in the summary. A path is read
        through ``cache`` when one is given.
        """
        if name in self._summaries:
            raise MatcherError(f"list {name!r} is already loaded")
        if kind not in ("block", "allow"):
            raise MatcherError(f"list {name!r}: kind must be 'block' or 'allow', not {kind!r}")
        try:
            if cache is not None and isinstance(source, str | os.PathLike):
                compiled = cache.compiled(Path(source), kind)
            else:
                compiled = compile_list(source, kind)
        except DnsFilterError as e:
            raise MatcherError(str(e)) from e
        self._add_compiled(name, compiled)
        trim_heap()  # the build's freed buffers would otherwise stay in our RSS
        return compiled.summary

    def _add_compiled(self, name: str, compiled: CompiledList) -> None:
        summary = compiled.summary
        for verdict in (0, 1):
            for target, big, small, index in (
                (self._names, self._big_names, self._small_names, compiled.names[verdict]),
                (
                    self._wildcards,
                    self._big_wildcards,
                    self._small_wildcards,
                    compiled.wildcards[verdict],
                ),
            ):
                if len(index):
                    entry = (name, index, summary.max_labels)
                    target[verdict].append(entry)
                    if len(index) <= SMALL_LIST:
                        small[verdict].update(index.keys())
                    else:
                        big[verdict].append(entry)
                    self._max_labels = max(self._max_labels, summary.max_labels)
                    self._nbytes += index.nbytes
            if compiled.regexes[verdict]:
                self._regexes[verdict].append((name, _RegexRules(compiled.regexes[verdict])))
        self._summaries[name] = summary

    @property
    def lists(self) -> Mapping[str, ListSummary]:
        """Each list's parse summary, in the order the lists were added (read-only view)."""
        return MappingProxyType(self._summaries)

    @property
    def nbytes(self) -> int:
        """Memory held by the name and wildcard indexes."""
        return self._nbytes

    def is_blocked(self, qname: str) -> bool:
        """Shorthand for ``match(qname)`` having verdict ``block``."""
        found = self.match(qname)
        return found is not None and found.verdict == "block"

    def match(self, qname: str, enabled: AbstractSet[str] | None = None) -> Match | None:
        """The deciding rule for ``qname`` (any case, trailing dot or not), or None.

        ``enabled``: only these lists take part (a client group's lists); None: all lists.
        """
        name = qname.lower()
        if name.endswith("."):
            name = name[:-1]
        # Keys of the name and of each parent with two labels or more, skipping the longest
        # ones when no list has names that long (an ip6.arpa name has 34 labels).
        ndots = name.count(".")
        first = max(0, ndots + 1 - self._max_labels)  # suffix j has ndots + 1 - j labels
        starts: list[int] = []
        keys: list[int] = []
        if first < ndots:
            start = 0
            for _ in range(first):
                start = name.find(".", start) + 1
            dot = name.find(".", start)
            while dot >= 0:
                starts.append(start)
                keys.append(name_key(name[start:]))
                start = dot + 1
                dot = name.find(".", start)
        longest = ndots + 1 - first  # labels of keys[0]
        for verdict in (1, 0):
            small = self._small_names[verdict]
            names = (
                self._names[verdict]
                if small and not small.isdisjoint(keys)
                else self._big_names[verdict]
            )
            for list_name, index, labels in names:
                if enabled is not None and list_name not in enabled:
                    continue
                found = index.first_of(keys, max(0, longest - labels))
                if found >= 0:
                    return Match(_VERDICTS[verdict], list_name, name[starts[found] :])
            small = self._small_wildcards[verdict]
            wildcards = (
                self._wildcards[verdict]
                if small and not small.isdisjoint(keys)
                else self._big_wildcards[verdict]
            )
            for list_name, index, labels in wildcards:
                if enabled is not None and list_name not in enabled:
                    continue
                found = index.first_of(keys, max(0, 1 - first, longest - labels))
                if found >= 0:
                    return Match(_VERDICTS[verdict], list_name, "*." + name[starts[found] :])
            for list_name, rules in self._regexes[verdict]:
                if enabled is not None and list_name not in enabled:
                    continue
                pattern = rules.search(name)
                if pattern is not None:
                    return Match(_VERDICTS[verdict], list_name, f"/{pattern}/")
        return None


_VERDICTS: tuple[Verdict, Verdict] = ("block", "allow")
