"""Helpers shared by the appliance tests."""

from __future__ import annotations

from pathlib import Path


def variant(policies: Path, name: str, old: str, new: str) -> Path:
    """small-office.yaml with ``old`` replaced by ``new``, saved as ``<name>.yaml``."""
    text = (policies / "small-office.yaml").read_text()
    assert old in text
    path = policies / f"{name}.yaml"
    path.write_text(text.replace(old, new))
    return path
