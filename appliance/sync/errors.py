"""Sync errors: every refusal names its reason, so the agent can record and report it."""

from __future__ import annotations

from typing import Literal, get_args

from appliance.errors import ApplianceError

RefusalReason = Literal[
    "signature",
    "unknown-key",
    "revoked-key",
    "rollback",
    "expired",
    "hash-mismatch",
    "invalid-policy",
    "malformed",
    "wrong-site",
]
REFUSAL_REASONS: frozenset[str] = frozenset(get_args(RefusalReason))


class SyncError(ApplianceError):
    """Sync could not do its job (network, files, keys); the live policy stays enforced."""


class BundleRefused(SyncError):
    """Signed metadata or a blob failed a check; nothing from it may be used.

    ``reason`` is one machine-readable word (reported at check-in and shown on the fleet
    page); the message says what was wrong in words an operator can act on.
    """

    def __init__(self, reason: RefusalReason, message: str) -> None:
        if reason not in REFUSAL_REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason: RefusalReason = reason
        self.detail = message
