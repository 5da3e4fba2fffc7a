"""Shared pytest options and fixtures."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.lab_fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/*.nft from the current compiler output instead of comparing",
    )
    parser.addoption(
        "--update-screenshots",
        action="store_true",
        default=False,
        help="browser tests save their screenshots to docs/screenshots/ (else a temp dir)",
    )
