"""The policy forms' edits, as pure functions: policy text + form values -> new policy text.

The policy is the admin's document, not ours: a form that blocks one domain must not
reformat the file, drop its comments or reorder its sections, or the history's diffs become
noise and the admin stops trusting the forms. So edits go through ruamel.yaml's round-trip
mode (comments, key order, flow style and quoting kept) with the file's own indentation.

These functions check only what they need to place the value (the group exists, the name
is free, the value has the right shape) and raise ``PolicyEditError`` with a sentence an
admin can act on. Everything else is the loader's job: the caller always validates and
plans the resulting text before anything is applied.
"""

from __future__ import annotations

import io
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString
from ruamel.yaml.tokens import CommentToken

from policies.schema import TOP_LEVEL
from policies.schema_base import NAME_PATTERN
from policies.web_filter import looks_like_mac, parse_mac

Verdict = Literal["block", "allow"]
ACTIONS = ("accept", "drop", "reject")
PROTOCOLS = ("tcp", "udp", "both")
DAY_WORDS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun", "weekdays", "weekend", "daily")

_NAME = re.compile(NAME_PATTERN)
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$"
)
_TIME = re.compile(r"^([01]?\d|2[0-4]):[0-5]\d\s*-\s*([01]?\d|2[0-4]):[0-5]\d$")
_PORT_RANGE = re.compile(r"^(\d{1,5})\s*-\s*(\d{1,5})$")
_PY_YAML: Any = yaml.resolver.Resolver()  # how the policy loader (PyYAML, YAML 1.1) reads scalars


class PolicyEditError(ValueError):
    """A form value that cannot be placed into the policy; the message is for the admin."""


@dataclass(frozen=True)
class PolicyFacts:
    """Names the forms offer in their selects (empty lists when the text does not parse)."""

    zones: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    schedules: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RuleSpec:
    name: str
    source: list[str]
    dest: list[str]
    action: str
    services: list[str] = field(default_factory=list)
    schedule: str = ""
    comment: str = ""


@dataclass(frozen=True)
class PortForwardSpec:
    name: str
    port: str
    to: str
    to_port: str = ""
    protocol: str = "tcp"
    sources: list[str] = field(default_factory=list)
    comment: str = ""


def split_list(text: str) -> list[str]:
    """Form input ``a, b c`` -> ``["a", "b", "c"]``."""
    return [part for part in re.split(r"[\s,]+", text.strip()) if part]


# -- facts -------------------------------------------------------------------------------------
def facts(text: str) -> PolicyFacts:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return PolicyFacts()
    if not isinstance(data, dict):
        return PolicyFacts()

    def keys(value: Any) -> list[str]:
        return [str(k) for k in value] if isinstance(value, dict) else []

    web = data.get("web_filter")
    rules = data.get("rules")
    return PolicyFacts(
        zones=keys(data.get("zones")),
        groups=keys(web.get("groups")) if isinstance(web, dict) else [],
        clients=keys(data.get("clients")),
        rules=[str(r["name"]) for r in rules or [] if isinstance(r, dict) and "name" in r]
        if isinstance(rules, list)
        else [],
        schedules=keys(data.get("schedules")),
    )


# -- the edits ---------------------------------------------------------------------------------
def set_domain(text: str, group: str, domain: str, verdict: Verdict) -> str:
    """Block or allow ``domain`` for a web-filter group (and take it off the other list)."""
    name = domain.strip().lower().rstrip(".")
    bare = name[2:] if name.startswith("*.") else name
    if not _DOMAIN.match(bare) or "." not in bare:
        raise PolicyEditError(f"{domain!r} is not a domain name (e.g. social.example)")
    if verdict not in ("block", "allow"):
        raise PolicyEditError(f"choose block or allow, not {verdict!r}")
    doc = _Doc(text)
    entry = doc.group(group)
    if name in _as_list(entry.get(verdict)):
        raise PolicyEditError(f"{name} is already on the {verdict} list of group {group}")
    other = "allow" if verdict == "block" else "block"
    _remove(entry, other, name)
    doc.add_to_list(entry, verdict, name)
    return doc.dump()


def add_client(text: str, group: str, member: str) -> str:
    """Put an address, CIDR, MAC, a ``clients:`` name or a zone into a group.

    A member belongs to one group (the loader insists), so one named in another group
    moves: the preview's policy diff shows both lines.
    """
    doc = _Doc(text)
    entry = doc.group(group)
    value = member.strip()
    named = set(_keys(doc.data.get("clients"))) | set(_keys(doc.data.get("zones")))
    if looks_like_mac(value):
        mac = parse_mac(value)
        if mac is None:
            raise PolicyEditError(f"{value!r} is not a MAC address (e.g. 02:00:00:00:00:21)")
        value = mac
    elif value not in named:
        try:  # a CIDR as written (host bits and all: the loader has its say), an address tidied
            ipaddress.ip_network(value, strict=False)
            value = value if "/" in value else str(ipaddress.ip_address(value))
        except ValueError:
            raise PolicyEditError(
                f"{member!r} is no address, CIDR or MAC, and no client or zone of this policy "
                f"(clients: {_names(_keys(doc.data.get('clients')))})"
            ) from None
    if value in _as_list(entry.get("clients")):
        raise PolicyEditError(f"{value} is already in group {group}")
    for other in doc.data["web_filter"]["groups"].values():
        if isinstance(other, dict) and value in _as_list(other.get("clients")):
            _remove(other, "clients", value)
    doc.add_to_list(entry, "clients", value)
    return doc.dump()


def add_rule(text: str, rule: RuleSpec, *, before: str = "") -> str:
    """Add a firewall rule at the end, or before the rule named ``before`` (order matters)."""
    _check_name(rule.name, "rule name")
    if rule.action not in ACTIONS:
        raise PolicyEditError(f"action must be one of {', '.join(ACTIONS)}")
    if not rule.source or not rule.dest:
        raise PolicyEditError("a rule needs from and to (a zone, group, address, self or any)")
    doc = _Doc(text)
    rules = doc.section("rules", CommentedSeq)
    names = [r.get("name") for r in rules if isinstance(r, dict)]
    if rule.name in names:
        raise PolicyEditError(f"there is already a rule named {rule.name}")
    if rule.schedule and rule.schedule not in _keys(doc.data.get("schedules")):
        raise PolicyEditError(f"no schedule named {rule.schedule!r}")
    new = CommentedMap()
    new["name"] = _scalar(rule.name)
    new["from"] = _one_or_many(rule.source)
    new["to"] = _one_or_many(rule.dest)
    if rule.services:
        new["service"] = _one_or_many(rule.services)
    new["action"] = _scalar(rule.action)
    if rule.schedule:
        new["schedule"] = _scalar(rule.schedule)
    if rule.comment.strip():
        new["comment"] = _scalar(rule.comment.strip())
    if before:
        if before not in names:
            raise PolicyEditError(f"no rule named {before!r} to put the new rule before")
        rules.insert(names.index(before), new)
    else:
        _append(rules, new)
    return doc.dump()


def add_port_forward(text: str, spec: PortForwardSpec) -> str:
    """Publish an inside address's port on the outside (``nat.port_forwards``)."""
    _check_name(spec.name, "port forward name")
    port = _port(spec.port, "port", ranges=True)
    to_port = _port(spec.to_port, "to_port") if spec.to_port.strip() else None
    try:
        to = str(ipaddress.ip_address(spec.to.strip()))
    except ValueError:
        raise PolicyEditError(f"to: {spec.to!r} is not an inside address") from None
    if spec.protocol not in PROTOCOLS:
        raise PolicyEditError(f"protocol must be one of {', '.join(PROTOCOLS)}")
    doc = _Doc(text)
    nat = doc.section("nat", CommentedMap)
    forwards = nat.get("port_forwards")
    if spec.name in [f.get("name") for f in forwards or [] if isinstance(f, dict)]:
        raise PolicyEditError(f"there is already a port forward named {spec.name}")
    new = CommentedMap()
    new["name"] = _scalar(spec.name)
    if spec.protocol != "tcp":
        new["protocol"] = spec.protocol
    new["port"] = port
    new["to"] = _scalar(to)
    if to_port is not None:
        new["to_port"] = to_port
    if spec.sources:
        new["from"] = _one_or_many(spec.sources)
    if spec.comment.strip():
        new["comment"] = _scalar(spec.comment.strip())
    if isinstance(forwards, list):
        _append(forwards, new)
    elif forwards is None:
        doc.add_key(nat, "port_forwards", CommentedSeq([new]))
    else:
        raise PolicyEditError("nat.port_forwards is not a list; fix it in the editor")
    return doc.dump()


def add_schedule(text: str, name: str, days: str, time: str) -> str:
    """Add a weekly window to a schedule, creating the schedule if it is new."""
    _check_name(name, "schedule name")
    day_list = [d.lower() for d in split_list(days)] or ["daily"]
    for day in day_list:
        if day[:3] not in DAY_WORDS and day not in DAY_WORDS:
            raise PolicyEditError(f"unknown day {day!r} (allowed: {', '.join(DAY_WORDS)})")
    if not _TIME.match(time.strip()):
        raise PolicyEditError(f"time must be HH:MM-HH:MM (site time), got {time!r}")
    window = CommentedMap()
    window["days"] = _one_or_many(day_list)
    window["time"] = _scalar(re.sub(r"\s+", "", time))
    window.fa.set_flow_style()
    doc = _Doc(text)
    schedules = doc.section("schedules", CommentedMap)
    windows = schedules.get(name)
    if isinstance(windows, list):
        _append(windows, window)
    else:
        doc.add_key(schedules, _scalar(name), CommentedSeq([window]))
    return doc.dump()


# -- the document ------------------------------------------------------------------------------
class _Doc:
    """One round-trip load of the policy, dumped back with the file's own indentation."""

    def __init__(self, text: str) -> None:
        self.yaml = YAML(typ="rt")
        # ruamel.yaml 0.17 (bookworm) types these attributes as None: both versions pass mypy
        self.yaml.preserve_quotes = True  # type: ignore[assignment,unused-ignore]
        self.yaml.width = 4096  # type: ignore[assignment,unused-ignore]  # no re-wrapping
        mapping, sequence, offset = _guess_indent(text)
        self.yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
        try:
            data = self.yaml.load(text)
        except YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise PolicyEditError(
                f"the policy is not valid YAML{where}; fix it in the editor first"
            ) from None
        if not isinstance(data, CommentedMap):
            raise PolicyEditError("the policy is empty or not a mapping; start in the editor")
        self.data = data
        self.new_sections: list[str] = []

    def dump(self) -> str:
        out = io.StringIO()
        self.yaml.dump(self.data, out)
        lines = out.getvalue().splitlines(keepends=True)
        for key in self.new_sections:
            _set_apart(lines, key)
        return "".join(lines)

    def group(self, name: str) -> CommentedMap:
        web = self.data.get("web_filter")
        groups = web.get("groups") if isinstance(web, dict) else None
        if not isinstance(groups, CommentedMap) or not groups:
            raise PolicyEditError("the policy has no web_filter groups yet; add one in the editor")
        if name not in groups:
            raise PolicyEditError(f"no web_filter group {name!r} (groups: {_names(groups)})")
        entry = groups[name]
        if entry is None:
            entry = groups[name] = CommentedMap()
        if not isinstance(entry, CommentedMap):
            raise PolicyEditError(f"web_filter group {name} is not a mapping; fix it in the editor")
        return entry

    def section(self, key: str, kind: type[CommentedMap] | type[CommentedSeq]) -> Any:
        """The top-level ``key``, created (in the schema's order) when it is missing."""
        value = self.data.get(key)
        if value is None:
            value = kind()
            order = list(TOP_LEVEL["properties"])
            later = [
                i
                for i, k in enumerate(self.data)
                if k in order and order.index(k) > order.index(key)
            ]
            if key in self.data:
                self.data[key] = value
            else:
                self.data.insert(later[0] if later else len(self.data), key, value)
                self.new_sections.append(key)
        if not isinstance(value, kind):
            raise PolicyEditError(f"{key} is not a {'list' if kind is CommentedSeq else 'map'}")
        return value

    def add_to_list(self, entry: CommentedMap, key: str, value: str) -> None:
        current = entry.get(key)
        if isinstance(current, list):
            _append(current, _scalar(value))
        elif current is None:
            self.add_key(entry, key, _flow([value]))
        else:
            entry[key] = _flow([*_as_list(current), value])

    def add_key(self, mapping: CommentedMap, key: str, value: Any) -> None:
        """``mapping[key] = value`` at the end, keeping the blank line that ended the block."""
        trailing = _pop_trailing(mapping)
        mapping[key] = value
        if trailing is not None:
            _push_trailing(mapping, trailing)


def _guess_indent(text: str) -> tuple[int, int, int]:
    """(mapping, sequence, offset) as the file already uses them; the examples' by default.

    ruamel applies one indentation to the whole document, so taking the file's own keeps
    every untouched line as it was.
    """
    mapping, sequence, offset = 0, 0, -1
    prev_indent, prev_opens = -1, False
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        dash = stripped == "-" or stripped.startswith("- ")
        if prev_opens and dash and indent >= prev_indent and offset < 0:
            offset = indent - prev_indent
            after = stripped[1:]
            sequence = offset + 1 + (len(after) - len(after.lstrip(" ")) if after.strip() else 1)
        elif prev_opens and not dash and indent > prev_indent and not mapping:
            mapping = indent - prev_indent
        body = stripped.split(" #", 1)[0].rstrip()
        prev_indent, prev_opens = indent, body.endswith(":") and not dash
    if offset < 0:
        offset, sequence = 2, 4
    return mapping or 2, max(sequence, offset + 2), offset


def _pop_trailing(node: Any) -> str | None:
    """Detach the blank lines and comments that follow the last line of a block collection.

    ruamel hangs them on the deepest last scalar (or at the end of the innermost block), so
    an item appended after it would land below the blank line, glued to the next section.
    The end-of-line comment of the last line itself (``action: accept  # why``) stays.
    Returns the detached lines (each ending in a newline).
    """
    if not isinstance(node, CommentedMap | CommentedSeq) or not node or node.fa.flow_style():
        return None
    last: Any = list(node)[-1] if isinstance(node, CommentedMap) else len(node) - 1
    found = _pop_trailing(node[last])
    if found is not None:
        return found
    index = 2 if isinstance(node, CommentedMap) else 0
    slot = node.ca.items.get(last)
    if slot and slot[index] is not None:
        token = slot[index]
        keep, newline, rest = str(token.value).partition("\n")
        if rest:
            slot[index] = CommentToken(keep + newline, token.start_mark) if keep.strip() else None
            return rest
    end = getattr(node.ca, "end", None)
    if end:
        node.ca.end = None
        return "".join(str(t.value) for t in end)
    return None


def _push_trailing(node: Any, lines: str) -> None:
    """Hang ``lines`` (from ``_pop_trailing``) after the last line of ``node``."""
    if not isinstance(node, CommentedMap | CommentedSeq) or not node:
        return
    last: Any = list(node)[-1] if isinstance(node, CommentedMap) else len(node) - 1
    child = node[last]
    if isinstance(child, CommentedMap | CommentedSeq) and child and not child.fa.flow_style():
        _push_trailing(child, lines)
        return
    token = CommentToken("\n" + lines, CommentMark(0))
    if isinstance(node, CommentedMap):
        node.ca.items.setdefault(last, [None, None, None, None])[2] = token
    else:
        node.ca.items.setdefault(last, [None, None])[0] = token


def _set_apart(lines: list[str], key: str) -> None:
    """A blank line before the new top-level ``key`` and before the section after it (with
    that section's leading comments), as every example policy is laid out."""
    start = next(i for i, ln in enumerate(lines) if re.match(rf"{re.escape(key)}:(\s|$)", ln))
    after = next(
        (i for i in range(start + 1, len(lines)) if lines[i][:1] not in (" ", "#", "\n", "")),
        None,
    )
    if after is not None:
        while lines[after - 1].startswith("#"):
            after -= 1
        if lines[after - 1].strip():
            lines.insert(after, "\n")
    if start > 0 and lines[start - 1].strip():
        lines.insert(start, "\n")


def _append(seq: list[Any], item: Any) -> None:
    trailing = _pop_trailing(seq)
    seq.append(item)
    if trailing is not None:
        _push_trailing(seq, trailing)


def _scalar(value: str) -> Any:
    """A string the policy loader (PyYAML, YAML 1.1) reads back as the same string: quoted
    when plain YAML 1.1 would read it as something else (``on``, ``12:30``) or it holds a
    colon (MACs, IPv6, times), as the examples write them."""
    tag = _PY_YAML.resolve(yaml.ScalarNode, value, (True, False))
    if ":" in value or "#" in value or tag != "tag:yaml.org,2002:str":
        return DoubleQuotedScalarString(value)
    return value


def _flow(items: Iterable[str]) -> CommentedSeq:
    seq = CommentedSeq(_scalar(i) for i in items)
    seq.fa.set_flow_style()
    return seq


def _one_or_many(items: list[str]) -> Any:
    return _scalar(items[0]) if len(items) == 1 else _flow(items)


def _remove(entry: dict[str, Any], key: str, value: str) -> None:
    current = entry.get(key)
    if isinstance(current, list):
        for item in [i for i in current if str(i) == value]:
            current.remove(item)
    elif current is not None and str(current) == value:
        entry[key] = _flow([])


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _keys(value: Any) -> list[str]:
    return [str(k) for k in value] if isinstance(value, dict) else []


def _names(items: Iterable[Any]) -> str:
    return ", ".join(str(i) for i in items) or "none"


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise PolicyEditError(
            f"{what} {name!r}: lower-case letters, digits, - and _, starting with a letter"
        )


def _port(text: str, what: str, *, ranges: bool = False) -> int | str:
    value = text.strip()
    m = _PORT_RANGE.match(value)
    if ranges and m and 1 <= int(m[1]) < int(m[2]) <= 65535:
        return f"{int(m[1])}-{int(m[2])}"
    if value.isdigit() and 1 <= int(value) <= 65535:
        return int(value)
    allowed = "a port 1-65535" + (" or a range a-b" if ranges else "")
    raise PolicyEditError(f"{what}: {text!r} is not {allowed}")
