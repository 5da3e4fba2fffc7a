"""Fixtures shared by the appliance tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[2] / "policies" / "examples"


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    """Copies of the example policies (with their feeds and lists) that tests may edit."""
    target = tmp_path / "policies"
    shutil.copytree(EXAMPLES, target)
    return target
