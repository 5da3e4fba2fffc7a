"""The bytes a signature covers, content hashes and timestamps, shared by both sides.

A signature is only meaningful if signer and verifier hash the very same bytes, so the
canonical form is fixed by the contract: sorted keys, no whitespace, UTF-8 (not ASCII
escapes). Timestamps are one fixed ISO-8601 UTC form ("2027-11-27T00:00:00Z"), so a string
compares the same way everywhere and no local time zone can creep in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Any

_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def canonical_bytes(signed: dict[str, Any]) -> bytes:
    """The exact bytes that are signed and verified for a ``signed`` document."""
    return json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_sha256_hex(value: object) -> bool:
    """Lower-case 64-digit hex: the only spelling of a hash or key id we accept."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def format_time(at: dt.datetime) -> str:
    """``at`` in UTC as ``YYYY-MM-DDTHH:MM:SSZ``; naive times are refused (ambiguous)."""
    if at.tzinfo is None:
        raise ValueError(f"a time zone is required: {at.isoformat()}")
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> dt.datetime:
    """Inverse of ``format_time``; raises ValueError for any other spelling."""
    if not isinstance(value, str) or _TIME.fullmatch(value) is None:
        raise ValueError(f"expected a UTC time like 2027-11-27T00:00:00Z, got {value!r}")
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
