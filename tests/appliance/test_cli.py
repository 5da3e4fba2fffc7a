"""The ``edgeguard`` command line: exit codes, what goes to stdout and what to stderr."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli import DEFAULT_POLICY, main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "policies" / "examples").glob("*.yaml"))
BAD = ROOT / "tests" / "policies" / "bad"
AT = "2025-06-02T10:00:00+00:00"  # fixed, so schedule-dependent output is repeatable


def test_there_are_four_examples() -> None:
    assert [p.stem for p in EXAMPLES] == [
        "office-guest-iot",
        "small-office",
        "strict-lockdown",
        "web-filter",
    ]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_check_accepts_every_example(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(example), "--at", AT]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{example}: OK — ")
    assert " zones, " in out and " nft rules, " in out
    assert err == ""


def test_check_refuses_a_broken_policy(capsys: pytest.CaptureFixture[str]) -> None:
    policy = BAD / "unknown-zone.yaml"
    assert main(["check", str(policy)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith(
        f"{policy}:14:9: rules[2].to: unknown zone 'guests' (zones: lan, guest, wan)"
    )
    assert lines[-1] == f"{policy}: 1 error(s); nothing was compiled or applied"


def test_check_prints_every_error_with_its_position(capsys: pytest.CaptureFixture[str]) -> None:
    policy = BAD / "five-mistakes.yaml"
    assert main(["check", str(policy)]) == 1
    _, err = capsys.readouterr()
    *problems, summary = err.splitlines()
    assert [line.split(": ", 1)[0] for line in problems] == [
        f"{policy}:4:9",
        f"{policy}:9:17",
        f"{policy}:11:27",
        f"{policy}:16:14",
        f"{policy}:21:13",
    ]
    assert summary == f"{policy}: 5 error(s); nothing was compiled or applied"


def test_check_refuses_a_policy_that_is_not_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nsite: {name: office\n", encoding="utf-8")
    assert main(["check", str(policy)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{policy}:3:1: not valid YAML: ")


def test_check_prints_warnings_but_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.yaml"
    text = (ROOT / "policies" / "examples" / "small-office.yaml").read_text(encoding="utf-8")
    policy.write_text(text.replace("feeds/spamhaus-drop.txt", "drop.txt"), encoding="utf-8")
    (tmp_path / "drop.txt").write_text("192.0.2.0/24\nnonsense\n", encoding="utf-8")
    shutil.copytree(ROOT / "policies" / "examples" / "lists", tmp_path / "lists")
    assert main(["check", str(policy), "--at", AT]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{policy}: OK — ") and out.rstrip().endswith(", 1 warning(s)")
    assert err.startswith(f"{policy}:")
    assert ": warning: blocklists.spamhaus-drop.files[0]: 1 line(s) of drop.txt skipped" in err


@pytest.mark.parametrize("name", ["missing.yaml", "."])
def test_unreadable_policy_file(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / name
    assert main(["check", str(policy)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{policy}: cannot read policy: ")
    reason = "No such file or directory" if name == "missing.yaml" else "Is a directory"
    first, second = err.strip().splitlines()
    assert first.endswith(reason)
    assert second == f"{policy}: nothing was compiled or applied"


def test_compile_writes_the_ruleset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = ROOT / "policies" / "examples" / "small-office.yaml"
    target = tmp_path / "ruleset.nft"
    assert main(["compile", str(example), "-o", str(target), "--at", AT]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# EdgeGuard ruleset for site 'small-office' (policy schema v1).\n")
    assert "\ntable inet edgeguard {\n" in text
    assert text.endswith("}\n")


def test_compile_to_stdout_matches_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = ROOT / "policies" / "examples" / "strict-lockdown.yaml"
    target = tmp_path / "ruleset.nft"
    assert main(["compile", str(example), "-o", str(target), "--at", AT]) == 0
    assert main(["compile", str(example), "--at", AT]) == 0
    out, _ = capsys.readouterr()
    assert out == target.read_text(encoding="utf-8")


def test_compile_refuses_a_broken_policy_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "ruleset.nft"
    assert main(["compile", str(BAD / "unknown-zone.yaml"), "-o", str(target)]) == 1
    assert not target.exists()
    out, err = capsys.readouterr()
    assert out == ""
    assert "nothing was compiled or applied" in err


def test_schema_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    out, _ = capsys.readouterr()
    schema = json.loads(out)
    assert "$defs" in schema
    assert {"rule", "zone", "service"} <= schema["$defs"].keys()
    assert schema["required"] == ["version", "site", "zones"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_explain_prints_a_summary(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(example), "--at", AT]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"What {example} does:\n  site {example.stem} (time zone ")
    assert "\n  rule " in out and "\n  default " in out
    assert "\nCompiles to " in out and " in one nft transaction " in out
    assert err == ""


def test_the_demo_policy_is_the_web_filter_example() -> None:
    assert DEFAULT_POLICY.is_file() and DEFAULT_POLICY.name == "web-filter.yaml"


def test_explain_refuses_a_broken_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(BAD / "unknown-zone.yaml")]) == 1
    out, err = capsys.readouterr()
    assert "Compiles to" not in out
    assert "nothing was compiled or applied" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check"])
    assert info.value.code == 2
    assert "policy" in capsys.readouterr().err


def test_installed_console_script() -> None:
    exe = shutil.which("edgeguard", path=str(Path(sys.executable).parent))
    assert exe is not None, "the edgeguard console script is not installed next to python"
    example = ROOT / "policies" / "examples" / "small-office.yaml"
    result = subprocess.run(
        [exe, "check", str(example), "--at", AT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{example}: OK — ")
    bad = subprocess.run(
        [exe, "check", str(BAD / "unknown-zone.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1
    assert ":14:9: rules[2].to: unknown zone 'guests'" in bad.stderr


def _modules_after(argv: list[str]) -> tuple[set[str], str]:
    """Run the console script's ``main`` with ``argv`` in a fresh interpreter: the modules it
    imported (our packages only) and its stdout."""
    code = (
        "import sys\n"
        "from webui.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print('MODULES', ' '.join(m for m in sys.modules"
        " if m.split('.')[0] in ('appliance', 'webui', 'policies', 'dns_filter')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    marker = done.stdout.rindex("MODULES")
    return set(done.stdout[marker:].split()[1:]), done.stdout[:marker]


def test_a_command_imports_only_its_own_group() -> None:
    """A long-running ``dns serve`` or ``run`` carries no other command's code (memory on a
    150 MB appliance)."""
    dns, out = _modules_after(["dns", "serve", "--help"])
    assert "--blocklist" in out
    assert "appliance.dns_cmd" in dns
    other = {"appliance.commands", "appliance.sync.msp_cmd", "appliance.sync.sync_cmd",
             "appliance.anomaly.score_cmd", "appliance.anomaly.quarantine_cmd",
             "appliance.anomaly.serve_cmd", "webui.fleet.serve_cmd", "webui.ui_main",
             "policies.compiler"}  # fmt: skip
    assert dns.isdisjoint(other), dns & other
    run, _ = _modules_after(["run", "--help"])
    assert "appliance.commands" in run
    assert run.isdisjoint(other - {"appliance.commands", "policies.compiler"})


def test_help_and_an_unknown_command_still_list_every_command() -> None:
    names = ["ui", "demo", "msp", "check", "compile", "explain", "plan", "apply", "run", "dns",
             "score", "quarantine", "anomaly", "sync", "lab", "schema"]  # fmt: skip
    _, out = _modules_after(["--help"])
    assert all(f"    {name} " in out or f"    {name}\n" in out for name in names), out
    done = subprocess.run(
        [sys.executable, "-m", "webui.cli", "no-such-command"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert all(repr(name) in done.stderr for name in names), done.stderr


def test_msp_has_both_the_signing_and_the_fleet_commands() -> None:
    _, out = _modules_after(["msp", "--help"])
    for name in ("init", "sign", "rotate-key", "serve", "add-appliance", "revoke-appliance"):
        assert name in out
