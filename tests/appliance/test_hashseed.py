"""The box's hash seed: created once, private, and pinned by re-executing the command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.hashseed import SEED_FILE_ENV, read_or_create_seed, seed_file

PINNED = """
import os
from appliance.hashseed import pin_hash_seed
print(pin_hash_seed(), os.environ.get("PYTHONHASHSEED"), hash("ads.example"))
"""


def test_the_seed_is_created_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "hashseed"
    seed = read_or_create_seed(path)
    assert 1 <= seed < 2**32
    assert path.stat().st_mode & 0o077 == 0
    assert read_or_create_seed(path) == seed
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize("junk", ["", "0\n", "4294967296", "seed", "\xff"])
def test_a_file_without_a_seed_is_replaced(tmp_path: Path, junk: str) -> None:
    path = tmp_path / "hashseed"
    path.write_text(junk, encoding="latin-1")
    seed = read_or_create_seed(path)
    assert path.read_text().strip() == str(seed)


def test_where_the_seed_lives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(SEED_FILE_ENV, str(tmp_path / "s"))
    assert seed_file() == tmp_path / "s"
    monkeypatch.setenv(SEED_FILE_ENV, "")
    assert seed_file() is None
    monkeypatch.delenv(SEED_FILE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert seed_file() == tmp_path / "edgeguard" / "hashseed"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert seed_file() == tmp_path / "home" / ".cache" / "edgeguard" / "hashseed"
    monkeypatch.setenv("HOME", "also-relative")
    assert seed_file() is None


def _run(env_seed_file: str) -> tuple[list[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONHASHSEED", "EDGEG"))}
    env[SEED_FILE_ENV] = env_seed_file
    done = subprocess.run(
        [sys.executable, "-c", PINNED], env=env, capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    return done.stdout.split(), done.stderr


def test_pinning_re_executes_with_the_stored_seed(tmp_path: Path) -> None:
    path = tmp_path / "hashseed"
    first, _ = _run(str(path))
    second, _ = _run(str(path))
    seed = path.read_text().strip()
    assert first[:2] == ["True", seed]
    assert first == second  # same seed, so the same hash() in two processes


def test_no_seed_no_pinning_and_no_loop(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    out, err = _run(str(blocker / "hashseed"))  # a directory that cannot be made
    assert out[:2] == ["False", "None"]
    assert "no hash seed" in err
    out, err = _run("")  # turned off: silent
    assert out[:2] == ["False", "None"] and err == ""
