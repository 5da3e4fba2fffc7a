"""Assembling what ``msp sign`` signs: referenced files, baseline layering, error locations."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from appliance.sync.bundle import assemble_policy
from policies.errors import PolicyLoadError, PolicyValidationError
from policies.feed_blob import decode_feed
from policies.feeds import load_feed
from policies.loader import parse_policy

EXAMPLES = Path(__file__).resolve().parents[3] / "policies" / "examples"

SITE = """\
# acme-hq: only what differs from the MSP baseline
site:
  name: acme-hq
  timezone: Europe/Berlin

rules:
  - name: lan-out
    from: lan
    to: wan
    action: accept
  - name: lan-to-nas
    from: lan
    to: dmz
    service: web
    action: {action}

dns:
  upstreams: ["198.51.100.10:53"]
  blocklists:
    acme: {{files: [lists/acme.txt]}}
"""


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    """The small-office example as an MSP baseline, with its feed and list files."""
    base = tmp_path / "baseline"
    shutil.copytree(EXAMPLES / "feeds", base / "feeds")
    shutil.copytree(EXAMPLES / "lists", base / "lists")
    shutil.copy(EXAMPLES / "small-office.yaml", base / "msp-baseline-3.yaml")
    return base / "msp-baseline-3.yaml"


def _site(tmp_path: Path, action: str = "accept", text: str = SITE) -> Path:
    site = tmp_path / "site"
    (site / "lists").mkdir(parents=True)
    (site / "lists" / "acme.txt").write_text("casino.example\n")
    (site / "acme-hq.yaml").write_text(text.format(action=action))
    return site / "acme-hq.yaml"


def _validated(text: str, files: dict[str, bytes], tmp_path: Path) -> dict[str, object]:
    where = tmp_path / "appliance"
    for rel, data in files.items():
        (where / rel).parent.mkdir(parents=True, exist_ok=True)
        (where / rel).write_bytes(data)
    policy = parse_policy(text, "bundle", base_dir=where).policy
    return {"rules": [r.name for r in policy.rules], "site": policy.site.name, "dns": policy.dns}


def test_policy_without_baseline_carries_its_referenced_files() -> None:
    assembled = assemble_policy(EXAMPLES / "small-office.yaml")
    assert assembled.text == (EXAMPLES / "small-office.yaml").read_text()
    assert assembled.baseline is None
    assert set(assembled.files) == {
        "feeds/spamhaus-drop.txt", "lists/ads-trackers.txt", "lists/malware.hosts",
        "lists/allow.txt",
    }  # fmt: skip
    for rel, data in assembled.files.items():
        assert data == (EXAMPLES / rel).read_bytes()
    # The IP feed (and only it: DNS lists are not parsed by the policy loader) comes
    # parsed too, equal to what the appliance's own parse of the text gives.
    assert set(assembled.parsed) == {"feeds/spamhaus-drop.txt"}
    feed = decode_feed(assembled.parsed["feeds/spamhaus-drop.txt"])
    assert feed == load_feed(EXAMPLES / "feeds" / "spamhaus-drop.txt")
    assert feed.entries > 0


def test_baseline_sections_are_overridden_by_the_site(tmp_path: Path, baseline: Path) -> None:
    assembled = assemble_policy(_site(tmp_path), baseline)
    assert assembled.baseline == "msp-baseline-3"
    result = _validated(assembled.text, assembled.files, tmp_path)
    assert result["site"] == "acme-hq"  # the site's section
    assert result["rules"] == ["lan-out", "lan-to-nas"]  # not the baseline's rules
    assert "no-printer-cloud" not in assembled.text
    # Sections only the baseline has are kept, with their files; the site's dns replaced
    # the baseline's, so the baseline's DNS lists are not bundled.
    assert "masquerade: [wan]" in assembled.text and "nas-https" in assembled.text
    assert set(assembled.files) == {"feeds/spamhaus-drop.txt", "lists/acme.txt"}
    assert assembled.files["lists/acme.txt"] == b"casino.example\n"
    assert "# acme-hq" not in assembled.text  # header comments before the first section go
    assert "# Ten desks" not in assembled.text


def test_invalid_site_policy_is_reported_at_its_own_line(tmp_path: Path, baseline: Path) -> None:
    site = _site(tmp_path, action="acept")
    with pytest.raises(PolicyValidationError) as info:
        assemble_policy(site, baseline)
    problem = info.value.problems[0]
    assert problem.location is not None
    assert (problem.location.file, problem.location.line) == (str(site), 15)
    assert problem.location.column == SITE.splitlines()[14].index("{") + 1
    assert "acept" in str(problem)


def test_invalid_baseline_section_is_reported_in_the_baseline(
    tmp_path: Path, baseline: Path
) -> None:
    text = baseline.read_text().replace("masquerade: [wan]", "masquerade: [wlan]")
    baseline.write_text(text)
    with pytest.raises(PolicyValidationError) as info:
        assemble_policy(_site(tmp_path), baseline)
    locations = [p.location for p in info.value.problems if "wlan" in str(p)]
    assert locations and locations[0] is not None
    assert locations[0].file == str(baseline)
    assert baseline.read_text().splitlines()[locations[0].line - 1].strip() == "masquerade: [wlan]"


def test_invalid_policy_without_baseline_points_at_the_file(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text((EXAMPLES / "web-filter.yaml").read_text().replace("from: iot", "from: iott"))
    shutil.copytree(EXAMPLES / "lists", tmp_path / "lists")
    with pytest.raises(PolicyValidationError) as info:
        assemble_policy(policy)
    assert any(p.location and p.location.file == str(policy) for p in info.value.problems)


@pytest.mark.parametrize("ref", ["/etc/hosts", "../outside.txt", "lists/../../x"])
def test_files_outside_the_policy_directory_are_refused(tmp_path: Path, ref: str) -> None:
    site = _site(tmp_path, text=SITE.replace("lists/acme.txt", ref))
    with pytest.raises(PolicyValidationError) as info:
        assemble_policy(site)
    problem = info.value.problems[0]
    assert "relative path" in problem.message and problem.field == "dns.blocklists.acme.files[0]"
    line = next(i for i, t in enumerate(site.read_text().splitlines(), 1) if "acme: {" in t)
    assert problem.location is not None and problem.location.line == line


def test_missing_list_file_is_refused(tmp_path: Path, baseline: Path) -> None:
    site = _site(tmp_path)
    (site.parent / "lists" / "acme.txt").unlink()
    with pytest.raises(PolicyValidationError, match=r"cannot read lists/acme\.txt"):
        assemble_policy(site, baseline)


def test_same_name_different_content_is_refused(tmp_path: Path, baseline: Path) -> None:
    site = _site(tmp_path)
    (site.parent / "feeds").mkdir()
    (site.parent / "feeds" / "spamhaus-drop.txt").write_text("192.0.2.0/24\n")
    # The site's block list and the baseline's anomaly feed name different files alike.
    site.write_text(site.read_text() + "blocklists:\n  mine: {files: [feeds/spamhaus-drop.txt]}\n")
    baseline.write_text(baseline.read_text() + "\nanomaly:\n  feeds: [feeds/spamhaus-drop.txt]\n")
    with pytest.raises(PolicyValidationError, match="differs from the file of the same name"):
        assemble_policy(site, baseline)


def test_flow_style_documents_cannot_be_layered(tmp_path: Path, baseline: Path) -> None:
    site = tmp_path / "flow.yaml"
    site.write_text('{site: {name: acme-hq, timezone: "Europe/Berlin"}}\n')
    with pytest.raises(PolicyLoadError, match="block-style"):
        assemble_policy(site, baseline)


def test_yaml_syntax_error_names_the_file(tmp_path: Path, baseline: Path) -> None:
    site = tmp_path / "broken.yaml"
    site.write_text("site:\n  name: [unclosed\n")
    with pytest.raises(PolicyLoadError, match=rf"{site}:\d+:\d+: not valid YAML"):
        assemble_policy(site, baseline)
