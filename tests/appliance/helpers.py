"""Helpers shared by the appliance tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from appliance import netns
from appliance.lab import Lab


def variant(policies: Path, name: str, old: str, new: str) -> Path:
    """small-office.yaml with ``old`` replaced by ``new``, saved as ``<name>.yaml``."""
    text = (policies / "small-office.yaml").read_text()
    assert old in text
    path = policies / f"{name}.yaml"
    path.write_text(text.replace(old, new))
    return path


class Controller:
    """``edgeguard run`` in the lab's router namespace, its output read line by line."""

    def __init__(self, lab: Lab, state: Path, policy: Path, *extra: str) -> None:
        self.lab, self.state = lab, state
        self.proc = netns.popen(
            lab.ns("router"),
            [sys.executable, "-m", "appliance.cli", "run", "--state-dir", str(state),
             "--policy", str(policy), *extra],
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.seen: list[str] = []

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.seen.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} from the controller: {''.join(self.seen)}")

    def apply(self, policy: Path, message: str = "turn the kids' social rule on") -> None:
        netns.run(
            self.lab.ns("router"),
            [sys.executable, "-m", "appliance.cli", "apply", str(policy), "--state-dir",
             str(self.state), "-m", message],
            timeout=60,
        )  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def wait_until(check: Callable[[], object], timeout: float = 60.0, step: float = 0.5) -> bool:
    """Poll ``check`` until it returns something true (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return False
