"""The web UI end to end, in Debian's headless Chromium driven by Playwright.

The appliance runs for real: the lab's router namespace runs `edgeguard run` (ruleset,
resolver), the UI runs on the host's loopback like `make run` does and applies through
the same engine (nft in the router's namespace). The checks: first-start setup, login,
block a domain for a group and apply, then a real DNS query to the resolver is blocked; a
bad YAML edit shows the error at its line and nothing is applied; a commit-confirm timeout
rolls back and the UI says so. Screenshots of the main pages go to a temp dir, or to
docs/screenshots/ with ``--update-screenshots``.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from appliance import netns
from appliance.anomaly.records import Alert
from appliance.anomaly.store import AnomalyStore
from appliance.lab import Lab
from appliance.labprobe import Probe

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium"),
]
ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "policies" / "examples"
PASSWORD = "a long office password"
STAFF = "192.0.2.10"


@dataclass
class Running:
    url: str
    token: str
    state: Path
    shots: Path
    controller: subprocess.Popen[str]
    ui: subprocess.Popen[str]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _line(proc: subprocess.Popen[str], pattern: str, timeout: float = 30) -> re.Match[str]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if m := re.search(pattern, line):
            return m
    raise AssertionError(f"no {pattern!r} in:\n{''.join(seen)}")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture(scope="module")
def running(
    lab: Lab, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("browser")
    state = tmp / "state"
    shots = (
        ROOT / "docs" / "screenshots"
        if request.config.getoption("--update-screenshots")
        else tmp / "screenshots"
    )
    shots.mkdir(parents=True, exist_ok=True)
    lab.load_ruleset(None)
    upstream = netns.popen(
        lab.ns("inet"),
        [sys.executable, "-m", "appliance.labdns", "--listen", "198.51.100.10"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    controller = netns.popen(
        lab.ns("router"),
        [sys.executable, "-m", "appliance.cli", "run", "--state-dir", str(state),
         "--policy", str(EXAMPLES / "web-filter.yaml")],
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    port = _free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "webui.cli", "ui", "serve", "--state-dir", str(state),
         "--listen", f"127.0.0.1:{port}", "--netns", lab.ns("router"),
         "--policy-base", str(EXAMPLES)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _line(controller, "resolver answering on")
        token = _line(ui, r"setup token (\S+)").group(1)
        # The UI prints its token, then gunicorn binds: on a loaded machine the browser got
        # there first (connection refused, and every later test failed after it).
        assert _until(lambda: _accepts(port), timeout=30), "the UI never listened"
        yield Running(f"https://127.0.0.1:{port}", token, state, shots, controller, ui)
    finally:
        _stop(ui)
        _stop(controller)
        upstream.terminate()
        upstream.wait(10)
        lab.load_ruleset(None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(browser: Browser, running: Running) -> Iterator[Page]:
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    yield pg
    context.close()


def dns(lab: Lab, name: str) -> str:
    [r] = lab.probe("lan", [Probe("dns", "192.0.2.1", 53, src=STAFF, qname=name, timeout=2.0)])
    return r.seen_as or r.outcome


def test_first_start_setup_then_login(page: Page, running: Running) -> None:
    pg = page
    pg.goto(running.url + "/")
    assert pg.url.endswith("/setup")
    pg.screenshot(path=str(running.shots / "setup.png"))
    pg.fill("input[name=token]", running.token)
    pg.fill("input[name=username]", "office-admin")
    pg.fill("input[name=password]", PASSWORD)
    pg.fill("input[name=password2]", PASSWORD)
    pg.click("button[type=submit]")
    assert "/account/2fa" in pg.url
    pg.click("text=Not now")
    pg.click("text=Log out")
    assert "/login" in pg.url
    pg.fill("input[name=username]", "office-admin")
    pg.fill("input[name=password]", "wrong password!")
    pg.click("button[type=submit]")
    assert "wrong user name or password" in pg.content()
    pg.fill("input[name=username]", "office-admin")
    pg.fill("input[name=password]", PASSWORD)
    pg.click("button[type=submit]")
    assert pg.locator("h1").first.inner_text() == "Dashboard"


def test_block_a_domain_for_a_group_then_dns_blocks_it(
    page: Page, running: Running, lab: Lab
) -> None:
    pg = page
    name = "chat.blocked-by-ui.example"
    assert dns(lab, name) == "198.51.100.10"  # staff may resolve it before
    pg.goto(running.url + "/policy")
    form = pg.locator("form[action$='/edit/domain']")
    form.locator("input[name=domain]").fill("blocked-by-ui.example")
    form.locator("select[name=group]").select_option("staff")
    form.locator("select[name=verdict]").select_option("block")
    form.locator("button[type=submit]").click()
    assert pg.locator("h1").first.inner_text() == "Plan"
    assert "blocked-by-ui.example" in pg.content()
    pg.screenshot(path=str(running.shots / "plan.png"), full_page=True)
    pg.fill("input[name=confirm_within]", "0")
    pg.click("form[action$='/policy/apply'] button[type=submit]")
    assert "version 2" in pg.content()
    deadline = time.monotonic() + 20  # the controller follows the live version
    while dns(lab, name) != "NXDOMAIN":
        assert time.monotonic() < deadline, "the resolver did not pick the new policy up"
        time.sleep(0.5)
    pg.screenshot(path=str(running.shots / "policy.png"), full_page=True)


def test_a_bad_yaml_edit_shows_its_line_and_applies_nothing(page: Page, running: Running) -> None:
    pg = page
    pg.goto(running.url + "/policy")
    text = pg.input_value("textarea[name=text]")
    lines = text.splitlines()
    target = next(i for i, ln in enumerate(lines) if ln.strip() == "from: lan") + 1
    lines[target - 1] = lines[target - 1].replace("from: lan", "from: lann")
    pg.fill("textarea[name=text]", "\n".join(lines))
    pg.click("text=Preview the plan")
    problems = pg.locator("#problems").inner_text()
    assert f"line {target}:" in problems and "unknown zone 'lann'" in problems
    pg.screenshot(path=str(running.shots / "policy-error.png"), full_page=True)
    pg.goto(running.url + "/policy/history")
    assert "lann" not in pg.content()


def test_an_unconfirmed_apply_rolls_back_and_the_ui_says_so(page: Page, running: Running) -> None:
    pg = page
    pg.goto(running.url + "/policy")
    form = pg.locator("form[action$='/edit/domain']")
    form.locator("input[name=domain]").fill("probation.example")
    form.locator("select[name=group]").select_option("kids")
    form.locator("button[type=submit]").click()
    pg.fill("input[name=confirm_within]", "10")
    pg.click("form[action$='/policy/apply'] button[type=submit]")
    banner = pg.locator("#confirm-banner")
    assert banner.count() == 1, pg.locator("main").inner_text()
    assert "on probation" in banner.inner_text()
    pg.screenshot(path=str(running.shots / "confirm-banner.png"))
    time.sleep(11.5)
    pg.goto(running.url + "/policy")
    assert "was rolled back" in pg.locator("#rolled-back").inner_text()
    assert pg.locator("#confirm-banner").count() == 0


def _web(lab: Lab) -> str:
    [r] = lab.probe("lan", [Probe("tcp", "198.51.100.10", 443, src=STAFF, timeout=1.0)])
    return r.outcome


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _until(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def test_quarantine_from_the_anomalies_page_cuts_the_host_off_and_lift_restores_it(
    page: Page, running: Running, lab: Lab
) -> None:
    """UI -> the quarantine table -> the controller's scoring loop -> the nft set -> packets."""
    pg = page
    store = AnomalyStore.in_state_dir(running.state)
    now = time.time()
    alert = Alert(STAFF, "beacon", "198.51.100.10", 91, "critical", now - 3600, now,
                  "check-ins every 60 s for 5 h, same size")  # fmt: skip
    store.record([alert], now)
    store.close()
    assert _web(lab) == "open"
    pg.goto(running.url + "/anomalies")
    row = pg.locator("tr", has_text="check-ins every 60 s")
    pg.once("dialog", lambda dialog: dialog.accept())
    row.locator("button", has_text="Quarantine host").click()
    assert pg.locator("button", has_text="Lift quarantine").count() == 1
    assert _until(lambda: _web(lab) != "open"), "the quarantined host still reaches the web"
    pg.screenshot(path=str(running.shots / "anomalies.png"), full_page=True)
    pg.once("dialog", lambda dialog: dialog.accept())
    pg.locator("button", has_text="Lift quarantine").click()
    assert pg.locator("button", has_text="Lift quarantine").count() == 0
    assert _until(lambda: _web(lab) == "open"), "lifting did not restore access"


def test_main_pages_render_and_are_screenshotted(page: Page, running: Running) -> None:
    pg = page
    for path, shot in (("/", "dashboard"), ("/querylog", "querylog"),
                       ("/policy/history", "history"), ("/settings", "settings"),
                       ("/health", "health")):  # fmt: skip
        resp = pg.goto(running.url + path)
        assert resp is not None and resp.status == 200, path
        pg.screenshot(path=str(running.shots / f"{shot}.png"), full_page=True)
    assert pg.context.browser is not None
    phone = pg.context.browser.new_context(
        ignore_https_errors=True, viewport={"width": 390, "height": 844},
        color_scheme="dark", storage_state=pg.context.storage_state(),
    )  # fmt: skip
    small = phone.new_page()
    small.goto(running.url + "/")
    small.screenshot(path=str(running.shots / "dashboard-phone-dark.png"), full_page=True)
    width = small.evaluate("document.documentElement.scrollWidth")
    assert width <= 390 + 1, "the dashboard scrolls sideways on a phone"
    phone.close()
    os.sync()
