"""The namespace helpers: safe names, idempotent lifecycle, nft only ever inside a namespace."""

from __future__ import annotations

import gzip
import os
import sys
import time
from pathlib import Path

import pytest

from appliance import netns
from appliance.errors import LabError

pytestmark = pytest.mark.netns

VALID_RULESET = """\
table inet t {
    chain fw {
        type filter hook forward priority filter; policy accept;
        meta hour "09:00"-"17:00" tcp dport 80 drop
    }
}
"""


@pytest.mark.parametrize("name", ["", "-n", "A", "a/b", "a b", "a.b", "../x", "a" * 32, "é", "x\n"])
def test_invalid_names_are_refused_before_anything_runs(name: str) -> None:
    with pytest.raises(LabError, match="invalid namespace name"):
        netns.validate_name(name)
    with pytest.raises(LabError):
        netns.exists(name)
    with pytest.raises(LabError):
        netns.run(name, ["true"])


def test_nft_requires_a_namespace() -> None:
    # There is no way to aim nft at the root namespace: an empty name is rejected up front.
    with pytest.raises(LabError, match="invalid namespace name"):
        netns.nft("", ["list", "ruleset"])


def test_create_exists_list_delete(netns_root: None, lab_prefix: str) -> None:
    name = f"{lab_prefix}-n1"
    try:
        assert not netns.exists(name)
        netns.create(name)
        assert netns.exists(name)
        assert name in netns.list_with_prefix(f"{lab_prefix}-")
        with pytest.raises(LabError, match="command failed"):
            netns.create(name)  # already exists
    finally:
        netns.delete(name)
    assert not netns.exists(name)
    netns.delete(name)  # idempotent
    assert name not in netns.list_with_prefix(f"{lab_prefix}-")


def test_run_captures_output_and_reports_failures(netns_root: None, lab_prefix: str) -> None:
    with netns.scratch_namespace(f"{lab_prefix}-s") as ns:
        out = netns.run(ns, ["ip", "-br", "link"]).stdout
        assert out.split()[0] == "lo"  # a fresh namespace has nothing but lo
        env = netns.run(ns, ["env"], env_extra={"EG_PROBE": "yes"}).stdout
        assert "EG_PROBE=yes" in env.splitlines()
        assert netns.run(ns, ["cat"], input="hello").stdout == "hello"
        with pytest.raises(LabError) as info:
            netns.run(ns, ["ip", "link", "show", "nosuchdev"])
        assert "ip link show nosuchdev" in str(info.value)
        assert "nosuchdev" in str(info.value).splitlines()[-1]  # stderr is included
        proc = netns.run(ns, ["false"], check=False)
        assert proc.returncode == 1
        with pytest.raises(LabError, match="timed out"):
            netns.run(ns, ["sleep", "5"], timeout=0.2)


def test_popen_runs_inside_the_namespace(netns_root: None, lab_prefix: str) -> None:
    with netns.scratch_namespace(f"{lab_prefix}-s") as ns:
        proc = netns.popen(ns, ["sleep", "30"])
        try:
            # `ip netns exec` enters the namespace right after fork: allow it a moment.
            deadline = time.monotonic() + 2
            while proc.pid not in netns.pids(ns) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proc.pid in netns.pids(ns)
        finally:
            proc.terminate()
            proc.communicate(timeout=5)


def test_scratch_namespace_is_removed_even_on_error(netns_root: None, lab_prefix: str) -> None:
    seen: list[str] = []
    with pytest.raises(RuntimeError), netns.scratch_namespace(f"{lab_prefix}-s") as ns:
        seen.append(ns)
        assert netns.exists(ns)
        raise RuntimeError("boom")
    assert seen and not netns.exists(seen[0])


def test_nft_loads_and_lists_in_utc(netns_root: None, lab_prefix: str) -> None:
    with netns.scratch_namespace(f"{lab_prefix}-s") as ns:
        netns.nft(ns, ["-f", "-"], VALID_RULESET)
        listed = netns.nft(ns, ["list", "ruleset"]).stdout
        # Loaded and listed with TZ=UTC, the schedule comes back exactly as compiled.
        assert 'meta hour "09:00"-"17:00"' in listed
        netns.nft(ns, ["flush", "ruleset"])
        assert netns.nft(ns, ["list", "ruleset"]).stdout.strip() == ""


def test_nft_check_accepts_valid_and_explains_invalid(netns_root: None) -> None:
    before = set(netns.list_with_prefix("egchk-"))
    ok, err = netns.nft_check(VALID_RULESET)
    assert (ok, err) == (True, "")
    ok, err = netns.nft_check("table inet t {\n chain c {\n tcp dport 80 frobnicate\n }\n}\n")
    assert not ok
    assert "Error" in err and "frobnicate" in err
    # The throwaway namespaces are gone.
    assert set(netns.list_with_prefix(f"egchk-{os.getpid()}-")) <= before


def test_no_shell_is_involved(netns_root: None, lab_prefix: str) -> None:
    # An argv item with shell syntax is passed verbatim, never interpreted.
    with netns.scratch_namespace(f"{lab_prefix}-s") as ns:
        out = netns.run(ns, ["echo", "$(id) ; true"]).stdout
    assert out == "$(id) ; true\n"


@pytest.mark.netns
@pytest.mark.usefixtures("netns_root")
def test_flowtable_probe_agrees_with_the_kernel_config() -> None:
    """PLATFORM-NOTES: this machine's kernel has no flowtables; the probe must find that out."""
    config = Path("/proc/config.gz")
    if not config.exists():
        pytest.skip("no /proc/config.gz to compare the probe with")
    text = gzip.decompress(config.read_bytes()).decode()
    expected = "CONFIG_NF_FLOW_TABLE=y" in text or "CONFIG_NF_FLOW_TABLE=m" in text
    probe = "from appliance.nft import LibNftables; print(LibNftables().supports_flowtable())"
    with netns.scratch_namespace("egft") as ns:
        out = netns.run(ns, [sys.executable, "-c", probe]).stdout.strip()
        listed = netns.nft(ns, ["list", "tables"]).stdout
    assert out == str(expected)
    assert listed.strip() == ""  # the dry run left nothing behind
