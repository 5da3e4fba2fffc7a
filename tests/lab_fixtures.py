"""pytest fixtures for the network-namespace lab (registered by tests/conftest.py).

Every namespace a test run creates carries this run's prefix (``egt<pid>``), so two runs on
one machine never collide and the session-end safety net below can remove exactly what this
run left behind, and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from appliance import lab as lab_mod
from appliance import netns
from appliance.lab import Lab

RUN_PREFIX = f"egt{os.getpid()}"
"""The module lab's prefix; everything else a test creates is named ``<RUN_PREFIX>-...`` too,
so ``lab_down(RUN_PREFIX)`` (which removes ``<RUN_PREFIX>-*``) catches all of it."""

ROOT_REASON = "needs root: the lab creates network namespaces, veth pairs and nftables rulesets"


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip(ROOT_REASON)


@pytest.fixture
def netns_root() -> None:
    """Skip the test unless it may create network namespaces."""
    _require_root()


@pytest.fixture(scope="session")
def lab_prefix() -> str:
    """This run's namespace prefix; tests name their own namespaces/labs ``<prefix>-<x>``."""
    return RUN_PREFIX


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """A running lab with servers in inet and dmz, shared by one test module.

    Tests that load a router ruleset should use ``clean_lab`` so the next test starts with
    an empty ruleset.
    """
    _require_root()
    the_lab = Lab.up(RUN_PREFIX)
    try:
        the_lab.start_servers()
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture
def clean_lab(lab: Lab) -> Iterator[Lab]:
    """The module's lab with an empty router ruleset before and after the test."""
    lab.load_ruleset(None)
    try:
        yield lab
    finally:
        lab.load_ruleset(None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Safety net: remove any namespace this run created, whatever happened to the tests."""
    del session, exitstatus
    if os.geteuid() != 0:
        return
    lab_mod.lab_down(RUN_PREFIX)
    for name in netns.list_with_prefix(f"egchk-{os.getpid()}-"):
        netns.delete(name)
