"""Health from /proc and /sys (fake trees here: what the hardware says, and nothing when it
says nothing), liveness signs, a real DNS probe; and the anomalies page before and after the
scoring's table exists."""

from __future__ import annotations

import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from tests.webui.conftest import logged_in, token_of, ui_store
from tests.webui.test_settings import WEB_FILTER, make_app
from webui import health
from webui.health import NOT_REPORTED


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_hardware_is_read_from_proc_and_sys(tmp_path: Path) -> None:
    proc = _tree(tmp_path / "proc", {
        "meminfo": "MemTotal: 1000000 kB\nMemFree: 10 kB\nMemAvailable: 80000 kB\n"
                   "SwapTotal: 0 kB\nSwapFree: 0 kB\n",
        "loadavg": "0.50 0.40 0.30 1/100 4242\n",
        "uptime": "90061.5 1000.0\n",
    })  # fmt: skip
    sys = _tree(tmp_path / "sys", {
        "class/thermal/thermal_zone0/temp": "72500\n",
        "class/thermal/thermal_zone0/type": "cpu-thermal\n",
        "class/hwmon/hwmon0/name": "coretemp\n",
        "class/hwmon/hwmon0/temp1_input": "41000\n",
        "class/hwmon/hwmon0/temp1_label": "Package id 0\n",
        "block/mmcblk0/device/type": "MMC\n",
        "block/mmcblk0/device/name": "8GTF4R\n",
        "block/mmcblk0/device/life_time": "0x02 0x09\n",
        "block/mmcblk0/device/pre_eol_info": "0x01\n",
        "block/mmcblk1/device/type": "SD\n",
        "devices/platform/soc/soc:firmware/get_throttled": "0x50000\n",
    })  # fmt: skip
    checks = {c.name: c for c in health.memory(proc) + health.load(proc)}
    assert checks["Memory"].value == "78 MiB free of 976 MiB" and checks["Memory"].level == "warn"
    assert checks["Load (1, 5, 15 min)"].value == "0.50 0.40 0.30"
    assert checks["Up for"].value == "1.0 d"
    temps = health.temperatures(sys)
    assert [(c.name, c.value, c.level) for c in temps] == [
        ("Temperature: cpu-thermal (thermal_zone0)", "72.5 °C", "warn"),
        ("Temperature: coretemp Package id 0", "41.0 °C", "ok"),
    ]
    wear = health.storage_wear(sys)
    assert wear[0].value == "type A: 10-20 % used, type B: 80-90 % used; reserve blocks: normal"
    assert wear[0].level == "warn" and "8GTF4R" in wear[0].name
    assert wear[1].value == NOT_REPORTED and "SD" in wear[1].name  # an SD card says nothing
    throttle = health.throttling(sys)[0]
    assert throttle.level == "warn"
    assert throttle.value == "under-voltage since boot, throttled since boot"


def test_hardware_that_says_nothing_is_not_guessed(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert [c.value for c in health.temperatures(empty)] == [NOT_REPORTED]
    assert [c.value for c in health.storage_wear(empty)] == [NOT_REPORTED]
    assert [c.value for c in health.memory(empty)] == [NOT_REPORTED]
    assert health.throttling(empty) == []
    assert health.disk(tmp_path)[0].level in ("ok", "warn", "bad")


def test_the_controller_is_found_by_its_command_line(tmp_path: Path) -> None:
    proc = _tree(tmp_path / "proc", {
        "101/cmdline": "/usr/bin/python3\0/opt/eg/.venv/bin/edgeguard\0run\0--policy\0p.yaml\0",
        "102/cmdline": "python3\0-m\0appliance.cli\0run\0",
        "103/cmdline": "/opt/eg/.venv/bin/edgeguard\0lab\0demo\0",
        "104/cmdline": "vim\0run\0",
        "self/cmdline": "x",
    })  # fmt: skip
    assert health.controller_pids(proc) == [101, 102]


class _FakeResolver:
    """Answers every query on 127.0.0.1 with NXDOMAIN, like the filter would."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            self.sock.sendto(data[:2] + b"\x81\x83" + data[4:], peer)

    def close(self) -> None:
        if not self.stop.is_set():
            self.stop.set()
            self.thread.join()
            self.sock.close()


@pytest.fixture
def resolver() -> Iterator[_FakeResolver]:
    fake = _FakeResolver()
    yield fake
    fake.close()


def test_the_resolver_is_asked_a_real_question(resolver: _FakeResolver, tmp_path: Path) -> None:
    assert health.probe_resolver("127.0.0.1", resolver.port) == "NXDOMAIN"
    inside = ["192.0.2.1", "[2001:db8:0:10::1]", "192.0.2.65", "[2001:db8:0:20::1]",
              "192.0.2.129", "[2001:db8:0:30::1]"]  # fmt: skip
    listen = ", ".join(f'"{a}:53"' for a in inside) + f', "127.0.0.1:{resolver.port}"'
    text = WEB_FILTER.replace(
        "  block_mode: nxdomain\n", f"  block_mode: nxdomain\n  listen: [{listen}]\n"
    )
    app = make_app(tmp_path, text)
    page = logged_in(app).get("/health").get_data(as_text=True)
    assert f"answering on 127.0.0.1:{resolver.port}" in page and "test query: NXDOMAIN" in page
    data = logged_in(app).get("/api/v1/health").get_json()
    services = {c["name"]: c for c in data["sections"]["Services"]}
    assert services["Live policy"]["value"] == "version 1 (good)"
    assert services["Newest DNS query logged"]["value"] == "no query log yet"
    resolver.close()
    data = logged_in(app).get("/api/v1/health").get_json()
    services = {c["name"]: c for c in data["sections"]["Services"]}
    assert services["DNS resolver"]["level"] == "bad" and data["level"] == "bad"
    ui_store(app).close()


def test_the_query_log_and_store_events_are_liveness_signs(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    state = app.extensions["edgeguard_config"].state_dir
    with sqlite3.connect(state / "querylog.db") as conn:
        conn.execute("CREATE TABLE queries (id INTEGER PRIMARY KEY, ts REAL NOT NULL)")
        conn.execute("INSERT INTO queries (ts) VALUES (strftime('%s','now') - 120)")
    conn.close()
    page = logged_in(app).get("/health").get_data(as_text=True)
    assert "Newest DNS query logged" in page and "2.0 min ago" in page
    assert "Newest controller event" not in page  # the store has none yet
    ui_store(app).close()


# -- anomalies -----------------------------------------------------------------------------
def test_anomalies_say_scoring_is_not_installed(app: Flask) -> None:
    client = logged_in(app)
    assert "not installed on this appliance yet" in client.get("/anomalies").get_data(as_text=True)
    assert client.get("/api/v1/anomalies").get_json() == {"installed": False, "anomalies": []}


def test_anomalies_from_the_scoring_table_can_be_dismissed(app: Flask) -> None:
    db = app.extensions["edgeguard_config"].state_dir / "anomalies.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE anomalies (id INTEGER PRIMARY KEY, ts REAL, host TEXT, score REAL,"
            " explanation TEXT, status TEXT)"
        )
        conn.execute(
            "INSERT INTO anomalies (ts, host, score, explanation, status) VALUES"
            " (1.7e9, '192.0.2.20', 0.97, 'talks to 40 new countries <script>', 'open')"
        )
    conn.close()
    admin = logged_in(app)
    page = admin.get("/anomalies").get_data(as_text=True)
    assert "192.0.2.20" in page and "&lt;script&gt;" in page and "2023-11-14" in page
    resp = admin.post("/anomalies/1/dismiss", data={"csrf_token": token_of(admin)})
    assert resp.status_code == 302
    assert admin.get("/api/v1/anomalies").get_json()["anomalies"][0]["status"] == "dismissed"
    assert (
        admin.post("/anomalies/1/dismiss", data={"csrf_token": token_of(admin)}).status_code == 404
    )
    assert ui_store(app).audit_log()[0]["action"] == "anomaly-dismissed"


def test_edgeguard_services_memory_is_read_from_their_cgroups(tmp_path: Path) -> None:
    mb = 1_000_000
    cgroup = _tree(tmp_path / "cgroup", {
        "system.slice/edgeguard-run.service/memory.current": f"{70 * mb}\n",
        "system.slice/edgeguard-run.service/memory.stat": f"anon {50 * mb}\nfile {20 * mb}\n",
        "system.slice/edgeguard-ui.service/memory.current": f"{45 * mb}\n",
        "system.slice/edgeguard-ui.service/memory.stat": f"anon {40 * mb}\n",
        "system.slice/ssh.service/memory.current": f"{900 * mb}\n",  # not ours
    })  # fmt: skip
    [check] = health.service_memory(cgroup)
    assert check.value == "115.0 MB (edgeguard-run 70.0, edgeguard-ui 45.0)"
    assert check.level == "ok"
    assert "anonymous 90.0 MB" in check.detail and "budget 150 MB" in check.detail
    (cgroup / "system.slice/edgeguard-ui.service/memory.current").write_text(f"{81 * mb}\n")
    [check] = health.service_memory(cgroup)
    assert check.level == "warn"  # 151 MB: over issue #9's budget


def test_no_service_memory_outside_systemd(tmp_path: Path) -> None:
    assert health.service_memory(tmp_path / "no-cgroup") == []
