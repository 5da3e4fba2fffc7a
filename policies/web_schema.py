"""JSON Schema objects of the web-filtering sections: ``clients`` and ``web_filter``.

Kept apart from ``schema`` only for size; ``schema`` merges them into the one published
document, and the validator takes its allowed keys from here like from everything else.
"""

from __future__ import annotations

from policies.schema_base import JSON, NAME_PATTERN, _obj, _one_or_many, _s

_DOMAINS = _one_or_many(_s("domain name; a leading *. means subdomains only"), "domain names")
_FILTER_ITEMS = _obj(
    {
        "categories": _one_or_many(_s("category (ads-trackers, adult, social, ...)"), "categories"),
        "services": _one_or_many(_s("catalogue service or service group"), "services"),
        "blocklists": _one_or_many(_s("a dns.blocklists name"), "DNS block lists"),
        "domains": _DOMAINS,
    },
    description="what a schedule turns on or off",
)
_SAFE_SEARCH: JSON = {
    "description": "true (every provider, strict), false, or provider -> mode",
    "oneOf": [
        {"type": "boolean"},
        {
            "type": "object",
            "propertyNames": {"enum": ["google", "youtube", "bing", "duckduckgo"]},
            "additionalProperties": {"enum": ["strict", "moderate", False]},
        },
    ],
}
_WINDOWS = {
    "description": "a schedule name or inline windows",
    "oneOf": [{"type": "string"}, {"type": "array", "items": {"$ref": "#/$defs/window"}}],
}

WEB_OBJECTS: dict[str, JSON] = {
    "client": _obj(
        {
            "mac": _one_or_many(_s("MAC address, e.g. 02:00:00:00:00:21"), "MAC addresses"),
            "ip": _one_or_many(_s("address or CIDR"), "addresses"),
            "description": _s("free text"),
        },
        description="a named device",
    ),
    "filter_items": _FILTER_ITEMS,
    "group_schedule": _obj(
        {
            "when": _WINDOWS,
            "block": {"$ref": "#/$defs/filter_items"},
            "unblock": {"$ref": "#/$defs/filter_items"},
            "safe_search": _SAFE_SEARCH,
        },
        required=("when",),
        description="changes that hold while the schedule is on",
    ),
    "client_group": _obj(
        {
            "clients": _one_or_many(
                _s("address, CIDR, MAC, a clients: name or a zone"), "who is in the group"
            ),
            "categories": _one_or_many(_s("category"), "categories blocked"),
            "services": _one_or_many(_s("catalogue service or service group"), "services blocked"),
            "blocklists": _one_or_many(
                _s("a dns.blocklists name"), "DNS block lists; default: all of them"
            ),
            "block": _DOMAINS,
            "allow": _DOMAINS,
            "safe_search": _SAFE_SEARCH,
            "block_mode": {"enum": ["nxdomain", "null", "ip", "refused"]},
            "filter": {
                "type": "boolean",
                "description": "false: unfiltered (no DNS redirect, DoT/DoH allowed)",
            },
            "schedules": {"type": "array", "items": {"$ref": "#/$defs/group_schedule"}},
            "description": _s("free text"),
        },
        description="clients that share one filtering policy",
    ),
    "category_source": _obj(
        {
            "files": _one_or_many(_s("list file, relative to the policy"), "list files"),
            "urls": _one_or_many(_s("http(s) URL, refreshed in the background"), "list URLs"),
        }
    ),
    "doh": _obj(
        {
            "block": {"type": "boolean", "description": "block DoH/DoT/DoQ (default true)"},
            "names": _DOMAINS,
            "addresses": _one_or_many(_s("address"), "extra DoH endpoint addresses"),
        }
    ),
    "web_filter": _obj(
        {
            "zones": _one_or_many(_s("zone"), "zones whose DNS is enforced; default: inside zones"),
            "default_group": _s("group for clients no group names", pattern=NAME_PATTERN),
            "groups": {
                "type": "object",
                "propertyNames": {"pattern": NAME_PATTERN},
                "additionalProperties": {"$ref": "#/$defs/client_group"},
            },
            "categories": {
                "type": "object",
                "propertyNames": {"pattern": NAME_PATTERN},
                "additionalProperties": {"$ref": "#/$defs/category_source"},
            },
            "doh": {"$ref": "#/$defs/doh"},
            "unblock_requests": {
                "type": "boolean",
                "description": "the block page offers a request-to-unblock form",
            },
            "domain_set_timeout": {
                "type": "integer",
                "minimum": 60,
                "maximum": 604800,
                "description": "minimum seconds a resolved address stays in a rule's set",
            },
        },
        description="per-group web filtering, enforced in the resolver and nftables",
    ),
}

WEB_TOP_LEVEL: dict[str, JSON] = {
    "clients": {
        "type": "object",
        "propertyNames": {"pattern": NAME_PATTERN},
        "additionalProperties": {"$ref": "#/$defs/client"},
    },
    "web_filter": {"$ref": "#/$defs/web_filter"},
}

__all__ = ["WEB_OBJECTS", "WEB_TOP_LEVEL"]
