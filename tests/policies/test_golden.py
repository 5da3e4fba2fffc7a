"""Golden files: each example policy compiles to exactly tests/golden/<name>.nft.

Golden files prove the output is stable; they do not prove nft accepts it, so every golden
file is also checked with ``nft -c`` inside a throwaway network namespace. Regenerate after
an intended change with ``make golden`` (pytest --regen-golden) and review the diff.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from policies.compiler import compile_policy
from policies.loader import load_policy

EXAMPLES = sorted((Path(__file__).parents[2] / "policies" / "examples").glob("*.yaml"))
GOLDEN = Path(__file__).parents[1] / "golden"
# A fixed instant: goldens must not change with the date (schedules depend on the UTC offset).
AT = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)


def _compiled(example: Path) -> str:
    return compile_policy(load_policy(example).policy, at=AT).text


def test_every_example_has_a_golden_file() -> None:
    assert EXAMPLES, "no example policies found"
    names = {p.stem for p in EXAMPLES}
    goldens = {p.stem for p in GOLDEN.glob("*.nft")}
    assert names == goldens, f"examples without golden: {names - goldens}; stale: {goldens - names}"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_compiles_to_golden(example: Path, request: pytest.FixtureRequest) -> None:
    text = _compiled(example)
    golden = GOLDEN / f"{example.stem}.nft"
    if request.config.getoption("--regen-golden"):
        golden.write_text(text, encoding="utf-8")
        pytest.skip(f"regenerated {golden.name}")
    assert golden.exists(), f"missing {golden}; run `make golden` and review it"
    assert text == golden.read_text(encoding="utf-8"), (
        f"{example.name} no longer compiles to {golden.name}"
    )


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="nft -c in a network namespace needs root")
@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("*.nft")), ids=lambda p: p.stem)
def test_nft_accepts_golden(golden: Path) -> None:
    from appliance.netns import nft_check

    ok, err = nft_check(golden.read_text(encoding="utf-8"))
    assert ok, f"nft rejects {golden.name}:\n{err}"
