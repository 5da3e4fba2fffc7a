"""Shared pytest options and fixtures."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from appliance.hashseed import SEED_FILE_ENV

pytest_plugins = ["tests.lab_fixtures"]

# Commands the tests start (``edgeguard dns serve``, ``run``) pin their hash seed and cache
# compiled lists beside it: here, not in the home directory of whoever runs the tests.
_SEED_DIR = tempfile.mkdtemp(prefix="edgeguard-test-seed-")
os.environ[SEED_FILE_ENV] = os.path.join(_SEED_DIR, "hashseed")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    del session, exitstatus
    shutil.rmtree(_SEED_DIR, ignore_errors=True)


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
