"""Where the UI finds the appliance, and its own settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class UiConfig:
    state_dir: Path  # the appliance's state: policy history, query log, unblock requests
    ui_dir: Path | None = None  # users, secret key, certificate (default: <state>/ui)
    netns: str | None = None  # apply rulesets in this network namespace (the lab's router)
    policy_base: Path | None = None  # where relative list files in policies resolve
    session_minutes: int = 30
    secure_cookies: bool = True  # False only for plain-HTTP tests

    @property
    def ui_path(self) -> Path:
        return self.ui_dir or self.state_dir / "ui"
