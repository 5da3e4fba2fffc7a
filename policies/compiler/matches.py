"""Small pure helpers that render model pieces as nft expressions.

Every string that reaches the ruleset passed the validator's name and text patterns, so
quoting here is a formality; we never build nft text from unchecked input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from policies.intervals import format_elements
from policies.model import AddressSet, Family, LogSpec, PortRange

IP = {4: "ip", 6: "ip6"}
ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}


def quoted(names: Iterable[str]) -> str:
    items = [f'"{n}"' for n in names]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def anonymous(elements: Sequence[str]) -> str:
    return elements[0] if len(elements) == 1 else "{ " + ", ".join(elements) + " }"


def set_name(addresses: AddressSet, family: Family) -> str:
    assert addresses.name is not None
    return f"{addresses.name}_v{family}"


class ConstSets:
    """Named constant sets for port lists and literal address lists, deduplicated.

    Every anonymous set in a rule is a kernel set object of its own, and nft's load time
    grows faster than linearly with their number (5,000 rules with ``{ 22, 80 }`` load in
    2.4 s, with one shared named set in 0.1 s). So each distinct list becomes one named
    set, shared by every rule that uses it.
    """

    def __init__(self) -> None:
        self.sets: dict[str, tuple[str, list[str]]] = {}

    @staticmethod
    def _name(prefix: str, items: list[str], suffix: str = "") -> str:
        readable = f"{prefix}_{'_'.join(items)}{suffix}"
        if len(readable) <= 40 and all(c.isalnum() or c in "_-" for c in readable):
            return readable
        digest = hashlib.sha1("|".join(items).encode()).hexdigest()[:12]
        return f"{prefix}_{digest}{suffix}"

    def ports(self, ranges: Iterable[PortRange]) -> str:
        items = [str(a) if a == b else f"{a}-{b}" for a, b in ranges]
        if len(items) == 1:
            return items[0]
        name = self._name("ports", items)
        self.sets[name] = ("inet_service", items)
        return f"@{name}"

    def addresses(self, family: Family, addresses: AddressSet) -> str:
        items = format_elements(family, addresses.of(family))
        if len(items) == 1:
            return items[0]
        name = self._name("addr", items, f"_v{family}")
        self.sets[name] = (ADDR_TYPE[family], items)
        return f"@{name}"

    def render(self) -> list[str]:
        lines: list[str] = []
        for name, (kind, items) in self.sets.items():
            lines += [
                f"\tset {name} {{",
                f"\t\ttype {kind}",
                "\t\tflags interval",
                "\t\telements = { " + ", ".join(items) + " }",
                "\t}",
            ]
        return lines


def address_match(addresses: AddressSet, family: Family, direction: str, consts: ConstSets) -> str:
    """``ip saddr @g_printers_v4`` for named groups, a shared constant set for literals."""
    if addresses.name is not None:
        return f"{IP[family]} {direction} @{set_name(addresses, family)}"
    return f"{IP[family]} {direction} {consts.addresses(family, addresses)}"


def log_statement(log: LogSpec) -> str:
    return f'log prefix "{log.prefix}" level {log.level}'


def set_block(name: str, family: Family, elements: list[str]) -> list[str]:
    lines = [f"\tset {name} {{", f"\t\ttype {ADDR_TYPE[family]}", "\t\tflags interval"]
    if elements:
        lines.append("\t\telements = {")
        last = len(elements) - 1
        lines.extend(f"\t\t\t{e}," if i < last else f"\t\t\t{e}" for i, e in enumerate(elements))
        lines.append("\t\t}")
    lines.append("\t}")
    return lines
