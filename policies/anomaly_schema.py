"""JSON Schema objects of the ``anomaly:`` section (scoring, alert actions, quarantine).

Kept apart from ``schema`` like ``web_schema``: ``schema`` merges them into the one
published document, and the validator takes the section's allowed keys from here.
"""

from __future__ import annotations

from policies.schema_base import JSON, _obj, _one_or_many, _s

SEVERITY_LEVELS = ("info", "low", "medium", "high", "critical")
_LEVEL = {"enum": list(SEVERITY_LEVELS), "description": "minimum alert severity"}

ANOMALY_OBJECTS: dict[str, JSON] = {
    "anomaly_syslog": _obj(
        {"address": _s("syslog server host:port (UDP), e.g. 198.51.100.5:514")},
        required=("address",),
    ),
    "anomaly": _obj(
        {
            "enabled": {"type": "boolean", "description": "score traffic (default true)"},
            "lan": _one_or_many(
                _s("CIDR"),
                "the office's own networks; default: the networks of every zone "
                "except the masquerade (WAN) zones",
            ),
            "feeds": _one_or_many(
                _s("threat-intel file (CIDR, address or domain per line), relative to the policy"),
                "threat-intelligence feeds",
            ),
            "record": {**_LEVEL, "description": "minimum severity stored (default low)"},
            "notify": {
                "enum": [*SEVERITY_LEVELS, "never"],
                "description": "minimum severity sent to webhook/syslog (default high)",
            },
            "quarantine": {
                "enum": ["never", "high", "critical"],
                "description": "minimum severity for automatic quarantine (default never)",
            },
            "quarantine_min_score": {
                "type": "integer",
                "minimum": 0,
                "maximum": 100,
                "description": "an alert must also score at least this to quarantine (default 90)",
            },
            "exempt": _one_or_many(
                _s("address group, address or CIDR"), "never quarantined automatically"
            ),
            "webhook": _s("http(s) URL alerts are POSTed to as JSON"),
            "syslog": {
                "description": "true: local syslog; or {address: host:port}",
                "oneOf": [{"type": "boolean"}, {"$ref": "#/$defs/anomaly_syslog"}],
            },
            "detectors": {
                "type": "object",
                "description": "detector (or alert kind) -> parameter -> number",
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": {"type": ["number", "boolean"]},
                },
            },
        },
        description="anomaly scoring of the office's traffic, and what alerts do",
    ),
}

ANOMALY_TOP_LEVEL: dict[str, JSON] = {"anomaly": {"$ref": "#/$defs/anomaly"}}

__all__ = ["ANOMALY_OBJECTS", "ANOMALY_TOP_LEVEL", "SEVERITY_LEVELS"]
