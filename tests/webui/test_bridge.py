"""The UI's view of the appliance: where a policy edited in the UI resolves its files."""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.commands import _services_setup
from webui.bridge import Appliance
from webui.config import UiConfig


def test_the_web_ui_resolves_list_files_where_the_controller_does(tmp_path: Path) -> None:
    """A policy edited in the UI of an MSP-managed box must find the bundle's list files,
    as the controller does, whether or not the UI was given a --policy-base."""
    state = tmp_path / "state"
    args = argparse.Namespace(state_dir=state, policy=tmp_path / "p" / "office.yaml")
    plain = Appliance(UiConfig(state_dir=state))
    given = Appliance(UiConfig(state_dir=state, policy_base=tmp_path / "p"))
    assert (plain.policy_base, given.policy_base) == (state, tmp_path / "p")
    (state / "sync").mkdir(parents=True)
    (state / "sync" / "enrolment.json").write_text("{}")
    assert plain.policy_base == state, "enrolled, no bundle yet: the local files still count"
    site = state / "sync" / "site"
    site.mkdir()
    assert plain.policy_base == given.policy_base == site == _services_setup(args)[1]
