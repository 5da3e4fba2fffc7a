"""The policy's JSON Schema, and the single source of which keys each object allows.

Editors (VS Code's YAML extension, for one) use the published schema to complete and flag
keys as the admin types; the validator takes its allowed-key sets from the same table, so
the two cannot disagree about what a key is called. Semantic checks (does the zone exist,
is the port in range) live in the validator, which reports them with file:line:column.
"""

from __future__ import annotations

import json

from policies.anomaly_schema import ANOMALY_OBJECTS, ANOMALY_TOP_LEVEL
from policies.schema_base import (
    IFNAME_PATTERN,
    JSON,
    NAME_PATTERN,
    ZONE_PATTERN,
    _obj,
    _one_or_many,
    _s,
)
from policies.web_schema import WEB_OBJECTS, WEB_TOP_LEVEL

_PORT = {"oneOf": [{"type": "integer", "minimum": 1, "maximum": 65535}, {"type": "string"}]}
_ACTION = {"enum": ["accept", "drop", "reject"], "description": "verdict"}
_LOG: JSON = {
    "description": "log matching packets: true, or prefix/level/rate",
    "oneOf": [
        {"type": "boolean"},
        _obj(
            {
                "prefix": _s("log prefix (letters, digits, space and _:.,=/@#+-)"),
                "level": {
                    "enum": ["emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"]
                },
                "rate": _s("at most this many log lines, e.g. 10/minute"),
            }
        ),
    ],
}
_WINDOW = _obj(
    {
        "days": _one_or_many(_s("mon..sun, weekdays, weekend or daily"), "days of the week"),
        "time": _s(
            "HH:MM-HH:MM in the site's time zone; an end before the start runs past midnight"
        ),
    },
    description="a weekly time window",
)
_ENDPOINT: JSON = {
    "description": (
        "zone(s), 'self', 'any', address group(s), block list(s), client group(s) or literal "
        "addresses"
    ),
    "oneOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}},
        _obj(
            {
                "zone": _one_or_many(_s("zone name"), "zones"),
                "address": _one_or_many(_s("group, block list or address"), "addresses"),
                "group": _one_or_many(_s("web_filter client group"), "client groups"),
                "domains": _one_or_many(
                    _s("domain name; *.x = subdomains only"),
                    "destination names: the addresses the resolver answers for them",
                ),
                "web_services": _one_or_many(
                    _s("catalogue service or service group"), "destination services by name"
                ),
            }
        ),
    ],
}

OBJECTS: dict[str, JSON] = {
    "site": _obj(
        {
            "name": _s("site name", pattern=NAME_PATTERN),
            "timezone": _s("IANA time zone for schedules, e.g. Europe/Berlin"),
            "description": _s("free text"),
        },
        required=("name",),
    ),
    "zone": _obj(
        {
            "interfaces": _one_or_many(_s("interface name", pattern=IFNAME_PATTERN), "interfaces"),
            "addresses": _one_or_many(_s("address/prefix of the box"), "the box's addresses here"),
            "description": _s("free text"),
        },
        required=("interfaces",),
    ),
    "blocklist": _obj(
        {
            "files": _one_or_many(_s("feed file, relative to the policy"), "feed files"),
            "entries": _one_or_many(_s("address, CIDR or range"), "inline entries"),
            "block": {"enum": ["both", "inbound", "outbound", "none"], "description": "directions"},
            "zones": _one_or_many(
                _s("zone"), "zones it applies on; default: masquerade (WAN) zones"
            ),
            "log": {"type": "boolean", "description": "log dropped packets"},
            "description": _s("free text"),
        }
    ),
    "service": _obj(
        {
            "tcp": _one_or_many(_PORT, "TCP ports or ranges a-b"),
            "udp": _one_or_many(_PORT, "UDP ports or ranges a-b"),
            "icmp": _one_or_many(_s("ICMP type name"), "ICMP types"),
            "icmpv6": _one_or_many(_s("ICMPv6 type name"), "ICMPv6 types"),
            "include": _one_or_many(_s("service name"), "other services to include"),
            "description": _s("free text"),
        }
    ),
    "window": _WINDOW,
    "log": _LOG,
    "limit": {
        "description": "rate limit: '10/second', or rate/burst/per_source",
        "oneOf": [
            {"type": "string"},
            _obj(
                {
                    "rate": _s("e.g. 3/minute"),
                    "burst": {"type": "integer", "minimum": 1},
                    "per_source": {"type": "boolean", "description": "one budget per source"},
                },
                required=("rate",),
            ),
        ],
    },
    "endpoint": _ENDPOINT,
    "rule": _obj(
        {
            "name": _s("unique rule name", pattern=NAME_PATTERN),
            "from": _ENDPOINT,
            "to": _ENDPOINT,
            "service": _one_or_many(_s("service name"), "services; omitted = any"),
            "action": _ACTION,
            "log": _LOG,
            "counter": {"type": "boolean"},
            "limit": {"$ref": "#/$defs/limit"},
            "schedule": {
                "description": "a schedule name or inline windows",
                "oneOf": [{"type": "string"}, {"type": "array", "items": _WINDOW}],
            },
            "comment": _s("free text, kept in the ruleset"),
            "enabled": {"type": "boolean"},
        },
        required=("action",),
    ),
    "default": _obj(
        {
            "from": _s("zone or any"),
            "to": _s("zone, self or any"),
            "action": _ACTION,
            "log": _LOG,
            "counter": {"type": "boolean"},
        },
        required=("from", "to", "action"),
    ),
    "port_forward": _obj(
        {
            "name": _s("unique name", pattern=NAME_PATTERN),
            "zone": _one_or_many(_s("zone"), "zones it arrives on; default: masquerade zones"),
            "protocol": {"enum": ["tcp", "udp", "both"]},
            "port": _PORT,
            "to": _s("inside address"),
            "to_port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "from": _one_or_many(_s("group, block list or address"), "allowed sources"),
            "hairpin": {
                "description": "reachable from inside via the outside address",
                "oneOf": [{"type": "boolean"}, {"type": "array", "items": {"type": "string"}}],
            },
            "comment": _s("free text"),
        },
        required=("port", "to"),
    ),
    "nat": _obj(
        {
            "masquerade": _one_or_many(_s("zone"), "zones whose IPv4 egress is masqueraded"),
            "port_forwards": {"type": "array", "items": {"$ref": "#/$defs/port_forward"}},
        }
    ),
    "management": _obj(
        {
            "anti_lockout": {"type": "boolean", "description": "keep management access open"},
            "zones": _one_or_many(_s("zone"), "zones management access comes from"),
            "services": _one_or_many(_s("service"), "management services (default ssh, https)"),
        }
    ),
    "options": _obj(
        {
            "offload": {"enum": ["auto", "on", "off"], "description": "flowtable offload"},
            "counters": {
                "type": "boolean",
                "description": "count default verdicts and block lists",
            },
        }
    ),
}

_DNS_LISTS = {
    "type": "object",
    "propertyNames": {"pattern": NAME_PATTERN},
    "additionalProperties": {"$ref": "#/$defs/dns_list"},
}
_DOMAINS = _one_or_many(_s("domain name"), "domain names")
OBJECTS.update(
    {
        "dns_list": _obj(
            {
                "files": _one_or_many(_s("list file, relative to the policy"), "list files"),
                "urls": _one_or_many(_s("http(s) URL, refreshed in the background"), "list URLs"),
            }
        ),
        "block_page": _obj({"ipv4": _s("IPv4 address"), "ipv6": _s("IPv6 address")}),
        "dns_rate_limit": _obj(
            {
                "rate": {"type": "number", "description": "queries per second per client"},
                "burst": {"type": "number", "description": "burst per client"},
                "action": {"enum": ["refuse", "drop"]},
            }
        ),
        "dns_query_log": _obj(
            {
                "enabled": {"type": "boolean"},
                "retention_days": {"type": "number", "description": "days kept"},
            }
        ),
        "dns": _obj(
            {
                "listen": _one_or_many(_s("address:port"), "where the resolver answers"),
                "upstreams": _one_or_many(
                    _s("host:port, udp://, tcp:// or tls://host:853#name"), "upstream servers"
                ),
                "blocklists": _DNS_LISTS,
                "allowlists": _DNS_LISTS,
                "block": _DOMAINS,
                "allow": _DOMAINS,
                "block_mode": {"enum": ["nxdomain", "null", "ip", "refused"]},
                "block_ttl": {"type": "integer", "minimum": 0, "maximum": 86400},
                "block_page": {"$ref": "#/$defs/block_page"},
                "local_records": {
                    "type": "object",
                    "description": "name -> {A: ..., AAAA: ..., CNAME: ...}",
                    "additionalProperties": {"type": "object"},
                },
                "forward_zones": {
                    "type": "object",
                    "description": "domain -> servers (conditional forwarding)",
                    "additionalProperties": _one_or_many(_s("server"), "servers"),
                },
                "rate_limit": {"$ref": "#/$defs/dns_rate_limit"},
                "rebinding_protection": {"type": "boolean"},
                "rebind_allow": _DOMAINS,
                "cache_size": {"type": "integer", "minimum": 0},
                "query_log": {"$ref": "#/$defs/dns_query_log"},
            },
            description="the DNS filtering resolver",
        ),
    }
)

OBJECTS.update(WEB_OBJECTS)
OBJECTS.update(ANOMALY_OBJECTS)

TOP_LEVEL: JSON = _obj(
    {
        "version": {"const": 1, "description": "policy schema version"},
        "site": {"$ref": "#/$defs/site"},
        "zones": {
            "type": "object",
            "propertyNames": {"pattern": ZONE_PATTERN},
            "additionalProperties": {"$ref": "#/$defs/zone"},
        },
        "address_groups": {
            "type": "object",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": _one_or_many(_s("address, CIDR, range or group"), "members"),
        },
        "blocklists": {
            "type": "object",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {"$ref": "#/$defs/blocklist"},
        },
        "services": {
            "type": "object",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {"$ref": "#/$defs/service"},
        },
        "schedules": {
            "type": "object",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {"type": "array", "items": {"$ref": "#/$defs/window"}},
        },
        "rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}},
        "defaults": {"type": "array", "items": {"$ref": "#/$defs/default"}},
        "nat": {"$ref": "#/$defs/nat"},
        "management": {"$ref": "#/$defs/management"},
        "options": {"$ref": "#/$defs/options"},
        "dns": {"$ref": "#/$defs/dns"},
        **WEB_TOP_LEVEL,
        **ANOMALY_TOP_LEVEL,
    },
    required=("version", "site", "zones"),
    description="An EdgeGuard site policy",
)


def allowed_keys(kind: str) -> tuple[str, ...]:
    """Keys an object of this kind may have ('top' for the document itself)."""
    obj = TOP_LEVEL if kind == "top" else OBJECTS[kind]
    if "oneOf" in obj:
        obj = next(o for o in obj["oneOf"] if o.get("type") == "object")
    return tuple(obj["properties"])


def required_keys(kind: str) -> tuple[str, ...]:
    obj = TOP_LEVEL if kind == "top" else OBJECTS[kind]
    if "oneOf" in obj:
        obj = next(o for o in obj["oneOf"] if o.get("type") == "object")
    return tuple(obj.get("required", ()))


def json_schema() -> JSON:
    """The whole schema document, as published in policies/schema/policy.schema.json."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://edgeguard.example/schema/policy-v1.json",
        "title": "EdgeGuard policy (version 1)",
        **TOP_LEVEL,
        "$defs": OBJECTS,
    }


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
