"""The three-way section merge: who changed what since the last bundle decides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from appliance.sync.merge import merge_policy, split_sections
from policies.errors import PolicyLoadError
from policies.loader import parse_policy

EXAMPLES = Path(__file__).parents[3] / "policies" / "examples"
OFFICE = (EXAMPLES / "small-office.yaml").read_text()


def edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


def data(text: str) -> dict[str, object]:
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


def test_sections_keep_their_comments_and_order() -> None:
    header, chunks = split_sections(OFFICE)
    assert header == "" and chunks["version"].startswith("# A small office")
    assert list(chunks)[:3] == ["version", "site", "zones"]
    assert "".join([header, *chunks.values()]) == OFFICE


def test_nothing_changed_locally_takes_the_remote_text_verbatim() -> None:
    remote = edit(OFFICE, "Ten desks", "Twelve desks")
    result = merge_policy(OFFICE, OFFICE, remote, locked=[])
    assert result.text == remote and result.conflicts == () and result.kept_local == ()


def test_a_local_change_in_an_unlocked_section_survives_a_sync() -> None:
    local = edit(OFFICE, "admins: [192.0.2.10,", "admins: [192.0.2.11,")
    remote = edit(OFFICE, "Ten desks", "Twelve desks")
    result = merge_policy(OFFICE, local, remote, locked=["site", "rules"])
    merged = data(result.text)
    assert merged["address_groups"]["admins"][0] == "192.0.2.11"  # local kept
    assert merged["site"]["description"] == "Twelve desks, one printer, one NAS"  # remote
    assert result.kept_local == ("address_groups",) and result.conflicts == ()
    assert "# A small office" in result.text  # the comments travel with their sections
    parse_policy(result.text, "merged", base_dir=EXAMPLES)  # still a valid policy


def test_a_locked_section_is_overwritten_by_the_msp() -> None:
    local = edit(OFFICE, "admins: [192.0.2.10,", "admins: [192.0.2.11,")
    result = merge_policy(OFFICE, local, OFFICE, locked=["address_groups"])
    assert data(result.text)["address_groups"]["admins"][0] == "192.0.2.10"
    assert result.text == OFFICE and result.conflicts == ()


def test_both_sides_changed_keeps_local_and_reports_the_conflict() -> None:
    local = edit(OFFICE, "rate: 10/second", "rate: 5/second")
    remote = edit(OFFICE, "rate: 10/second", "rate: 50/second")
    result = merge_policy(OFFICE, local, remote, locked=["site"])
    assert [c.section for c in result.conflicts] == ["rules"]
    conflict = result.conflicts[0].as_json()
    wan_ping = next(r for r in conflict["remote"] if r["name"] == "wan-ping")
    assert wan_ping["limit"]["rate"] == "50/second"
    assert "rate: 5/second" in result.text and "50/second" not in result.text


def test_the_same_change_on_both_sides_is_no_conflict() -> None:
    both = edit(OFFICE, "rate: 10/second", "rate: 5/second")
    result = merge_policy(OFFICE, both, both, locked=[])
    assert result.conflicts == () and result.text == both


def test_first_bundle_without_base_keeps_differing_local_sections_as_conflicts() -> None:
    remote = edit(OFFICE, "Ten desks", "Twelve desks")
    result = merge_policy(None, OFFICE, remote, locked=["zones"])
    assert [c.section for c in result.conflicts] == ["site"]
    assert result.conflicts[0].as_json()["base"] is None
    assert data(result.text)["site"]["description"].startswith("Ten desks")


def test_a_section_added_locally_stays_and_one_deleted_locally_stays_deleted() -> None:
    base = OFFICE
    local = edit(OFFICE, "services:\n  nas-web: {tcp: [443, 5001]}\n", "")
    local += "\nschedules:\n  work: {days: [mon], from: '08:00', to: '18:00'}\n"
    remote = edit(OFFICE, "Ten desks", "Twelve desks")
    merged = data(merge_policy(base, local, remote, locked=[]).text)
    assert "services" not in merged
    assert merged["schedules"]["work"]["to"] == "18:00"  # a time stays text, not 1080


def test_flow_style_documents_fall_back_to_a_plain_dump_with_the_same_data() -> None:
    base = "{version: 1, site: {name: a}, options: {x: '18:00'}}\n"
    local = "{version: 1, site: {name: b}, options: {x: '18:00'}}\n"
    remote = "{version: 1, site: {name: a}, options: {x: '19:00'}}\n"
    result = merge_policy(base, local, remote, locked=[])
    assert yaml.safe_load(result.text) == {
        "version": 1, "site": {"name": "b"}, "options": {"x": "19:00"},
    }  # fmt: skip


def test_a_bundle_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(PolicyLoadError, match="mapping"):
        merge_policy(OFFICE, OFFICE, "- just\n- a list\n", locked=[])
    with pytest.raises(PolicyLoadError, match="duplicate key"):
        merge_policy(OFFICE, OFFICE, "version: 1\nversion: 2\n", locked=[])
