"""The minimal safe ruleset: used when no policy can be applied, so the box never boots open.

It keeps management access (SSH and the web UI) and drops everything else, including all
forwarding. With no known management interfaces it accepts those ports on every interface:
being reachable by the admin beats being locked out of a box in a cupboard.
"""

from __future__ import annotations

from policies.compiler import TABLE_FAMILY, TABLE_NAME
from policies.compiler.matches import quoted

MANAGEMENT_PORTS = (22, 443)


def safe_ruleset(
    management_interfaces: list[str] | None, ports: tuple[int, ...] = MANAGEMENT_PORTS
) -> str:
    port_list = "{ " + ", ".join(str(p) for p in ports) + " }"
    where = f"iifname {quoted(management_interfaces)} " if management_interfaces else ""
    return "\n".join(
        [
            "# EdgeGuard SAFE MODE: no policy could be applied; management access only.",
            f"table {TABLE_FAMILY} {TABLE_NAME} {{",
            "\tchain input {",
            "\t\ttype filter hook input priority filter; policy drop;",
            '\t\tiif "lo" accept',
            "\t\tct state vmap { invalid : drop, established : accept, related : accept }",
            f'\t\t{where}tcp dport {port_list} accept comment "safe mode: management"',
            "\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept",
            "\t}",
            "\tchain forward {",
            "\t\ttype filter hook forward priority filter; policy drop;",
            "\t}",
            "}",
            "",
        ]
    )
