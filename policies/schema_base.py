"""Building blocks of the policy's JSON Schema, shared by ``schema`` and ``web_schema``."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
ZONE_PATTERN = r"^[a-z][a-z0-9_]{0,15}$"
IFNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$"


def _s(description: str, **extra: Any) -> JSON:
    return {"type": "string", "description": description, **extra}


def _one_or_many(item: JSON, description: str) -> JSON:
    return {"description": description, "oneOf": [item, {"type": "array", "items": item}]}


def _obj(
    properties: dict[str, JSON], required: tuple[str, ...] = (), description: str = ""
) -> JSON:
    out: JSON = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        out["required"] = list(required)
    if description:
        out["description"] = description
    return out
