"""Property: every valid policy compiles to a ruleset that real nft accepts.

Hypothesis builds random but valid policies (zones, nested groups, services, schedules
across midnight and time zones, rules with every option, defaults, NAT, block lists),
renders them as YAML, loads them through the real validator and loads the compiled
ruleset with ``nft -c`` in a throwaway network namespace.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.compiler import compile_policy
from policies.errors import PolicyValidationError
from policies.loader import parse_policy

ZONE_PLAN = {
    "wan": ["203.0.113.2/24", "2001:db8:ffff::2/64"],
    "lan": ["192.0.2.1/26", "2001:db8:0:10::1/64"],
    "guest": ["192.0.2.65/26"],
    "iot": ["192.0.2.129/27", "2001:db8:0:30::1/64"],
    "mgmt": [],
}
ADDRESSES = [
    "192.0.2.10",
    "192.0.2.0/28",
    "192.0.2.20-192.0.2.40",
    "198.51.100.0/24",
    "198.51.100.7",
    "2001:db8:0:10::10",
    "2001:db8:100::/64",
    "2001:db8::1-2001:db8::ff",
]
TIMEZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"]
SERVICES = ["ssh", "web", "dns", "ping", "ntp", "smb", "traceroute"]


def _window() -> st.SearchStrategy[dict[str, Any]]:
    clock = st.tuples(st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
    return st.builds(
        lambda days, a, b: {"days": days, "time": f"{a[0]:02d}:{a[1]:02d}-{b[0]:02d}:{b[1]:02d}"},
        st.one_of(
            st.sampled_from(["weekdays", "weekend", "daily"]),
            st.lists(
                st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
                min_size=1,
                max_size=3,
            ),
        ),
        clock,
        clock,
    ).filter(lambda w: w["time"][:5] != w["time"][6:])


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    zone_names = draw(
        st.lists(st.sampled_from(list(ZONE_PLAN)), min_size=1, max_size=5, unique=True)
    )
    zones = {z: {"interfaces": [f"{z}0"], "addresses": ZONE_PLAN[z]} for z in zone_names}
    groups: dict[str, Any] = {}
    for i in range(draw(st.integers(0, 3))):
        members = draw(st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=4))
        if groups and draw(st.booleans()):
            members.append(draw(st.sampled_from(sorted(groups))))
        groups[f"grp-{i}"] = members
    services: dict[str, Any] = {}
    if draw(st.booleans()):
        services["custom"] = {
            "tcp": draw(st.lists(st.sampled_from([22, 80, "8000-8100"]), min_size=1, max_size=2)),
            "icmpv6": ["echo-request"],
        }
    schedules = (
        {"sched": draw(st.lists(_window(), min_size=1, max_size=3))} if draw(st.booleans()) else {}
    )
    blocklists = {
        "bad": {"entries": draw(st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=3))}
    }
    masquerade = ["wan"] if "wan" in zones else []
    if not masquerade:
        blocklists["bad"]["zones"] = [zone_names[0]]
    endpoints = [*zone_names, "any", *groups, "bad", "198.51.100.9", "2001:db8:100::9"]
    rules = []
    for i in range(draw(st.integers(0, 8))):
        rule: dict[str, Any] = {
            "name": f"r{i}",
            "action": draw(st.sampled_from(["accept", "drop", "reject"])),
        }
        src = draw(st.sampled_from([*endpoints, "self"]))
        dst = draw(st.sampled_from([*endpoints, *([] if src == "self" else ["self"])]))
        if draw(st.booleans()) and groups:
            src = {"zone": zone_names[0], "address": draw(st.sampled_from(sorted(groups)))}
        rule["from"], rule["to"] = src, dst
        rule["service"] = draw(st.lists(st.sampled_from([*SERVICES, *services]), max_size=3))
        limit = draw(
            st.sampled_from(
                [None, "10/second", {"rate": "3/minute", "burst": 5, "per_source": True}]
            )
        )
        if limit:
            rule["limit"] = limit
        rule["log"] = draw(
            st.sampled_from(
                [False, True, {"prefix": "x y", "level": "notice"}]
                + ([] if limit else [{"rate": "5/minute"}])
            )
        )
        rule["counter"] = draw(st.booleans())
        if schedules and draw(st.booleans()):
            rule["schedule"] = "sched"
        elif draw(st.integers(0, 4)) == 0:
            rule["schedule"] = draw(st.lists(_window(), min_size=1, max_size=2))
        rules.append(rule)
    pairs = {
        (s, d)
        for s in [*zone_names, "any", "self"]
        for d in [*zone_names, "any", "self"]
        if not (s == d == "self")
    }
    chosen = draw(st.lists(st.sampled_from(sorted(pairs)), max_size=4, unique=True))
    defaults = [
        {
            "from": s,
            "to": d,
            "action": draw(st.sampled_from(["accept", "drop", "reject"])),
            "log": draw(st.sampled_from([False, True, {"rate": "1/second"}])),
            "counter": draw(st.booleans()),
        }
        for s, d in chosen
    ]
    forwards = []
    if masquerade and len(zone_names) > 1:
        for i in range(draw(st.integers(0, 2))):
            inside = next(z for z in zone_names if z != "wan")
            forwards.append(
                {
                    "name": f"pf{i}",
                    "protocol": draw(st.sampled_from(["tcp", "udp", "both"])),
                    "port": 8000 + i,
                    "to": "192.0.2.5" if inside != "mgmt" else "2001:db8:0:10::5",
                    "to_port": 80,
                    "hairpin": draw(st.booleans()),
                }
            )
    mgmt_zones = [z for z in zone_names if z != "wan"]
    management: dict[str, Any] = (
        {"zones": mgmt_zones[:1]} if mgmt_zones else {"anti_lockout": False}
    )
    return {
        "version": 1,
        "site": {"name": "prop", "timezone": draw(st.sampled_from(TIMEZONES))},
        "zones": zones,
        "address_groups": groups,
        "blocklists": blocklists,
        "services": services,
        "schedules": schedules,
        "rules": rules,
        "defaults": defaults,
        "nat": {"masquerade": masquerade, "port_forwards": forwards},
        "management": management,
        "options": {"counters": draw(st.booleans())},
    }


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="nft -c in a network namespace needs root")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policies(), st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 12, 31))
)
def test_random_valid_policies_compile_to_rulesets_nft_accepts(
    doc: dict[str, Any], when: dt.datetime
) -> None:
    from appliance.netns import nft_check

    text = yaml.safe_dump(doc, sort_keys=False)
    try:
        loaded = parse_policy(text, "generated.yaml")
    except PolicyValidationError as exc:  # the generator must only build valid policies
        pytest.fail(f"generated policy refused:\n{exc}\n---\n{text}")
    ruleset = compile_policy(loaded.policy, at=when.replace(tzinfo=dt.UTC))
    ok, err = nft_check(ruleset.text)
    assert ok, f"nft rejects the compiled ruleset:\n{err}\n--- policy ---\n{text}"
