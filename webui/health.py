"""Hardware and service health: what a managed service's "health check" looks at.

Everything comes from what the kernel and our own files tell: ``/proc`` (memory, load,
uptime, processes), ``/sys`` (thermal zones and hwmon sensors, SD/eMMC wear, a Raspberry
Pi's throttling flags), the state directory's file system, the config store and the query
log. What the hardware does not report is shown as "not reported by this hardware", never
guessed: an SD card usually has no wear counter (eMMC has), and a VM has no temperature.

There is no controller heartbeat file, so the controller's liveness is shown as signs with
their age: an ``edgeguard run`` process in this PID namespace, the store's newest event and
the query log's newest row; and whether the resolver answers a real query, when it listens
on an address this network namespace has.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sqlite3
import struct
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, jsonify, render_template
from werkzeug.wrappers import Response

from appliance.dns_service import listen_addresses
from appliance.store import ConfigStore
from policies.model import Policy
from webui.api import api_doc
from webui.bridge import appliance
from webui.settings_edit import live_policy

bp = Blueprint("health", __name__)
api_bp = Blueprint("health_api", __name__, url_prefix="/api/v1")

NOT_REPORTED = "not reported by this hardware"
TEMP_WARN, TEMP_BAD = 70.0, 80.0  # °C: a Raspberry Pi throttles from 80 (soft limit 60-80)
PROBE_TIMEOUT = 0.5
RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")
LEVELS = ("info", "ok", "warn", "bad")  # in order of concern
_THROTTLE_BITS = {
    0: "under-voltage now",
    1: "CPU frequency capped now",
    2: "throttled now",
    3: "soft temperature limit now",
    16: "under-voltage since boot",
    17: "frequency capped since boot",
    18: "throttled since boot",
    19: "soft temperature limit since boot",
}


@dataclass(frozen=True)
class Check:
    name: str
    value: str
    level: str = "info"  # ok, info, warn, bad
    detail: str = ""


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


# -- hardware ------------------------------------------------------------------------------
def memory(proc: Path) -> list[Check]:
    text = _read(proc / "meminfo") or ""
    info = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if rest.split():
            info[key] = int(rest.split()[0]) * 1024
    total, available = info.get("MemTotal"), info.get("MemAvailable")
    if not total or available is None:
        return [Check("Memory", NOT_REPORTED, "info")]
    share = available / total
    level = "bad" if share < 0.05 else "warn" if share < 0.10 else "ok"
    checks = [Check("Memory", f"{available >> 20} MiB free of {total >> 20} MiB", level)]
    swap, swap_free = info.get("SwapTotal", 0), info.get("SwapFree", 0)
    if swap:
        checks.append(Check("Swap", f"{(swap - swap_free) >> 20} MiB used of {swap >> 20} MiB"))
    return checks


def load(proc: Path) -> list[Check]:
    parts = (_read(proc / "loadavg") or "").split()
    cpus = os.cpu_count() or 1
    checks = []
    if len(parts) >= 3:
        level = "warn" if float(parts[1]) > 2 * cpus else "ok"
        checks.append(Check("Load (1, 5, 15 min)", " ".join(parts[:3]), level, f"{cpus} CPUs"))
    uptime = (_read(proc / "uptime") or "").split()
    if uptime:
        checks.append(Check("Up for", _age(float(uptime[0])), "ok"))
    return checks


def temperatures(sys: Path) -> list[Check]:
    checks = []
    for zone in sorted(sys.glob("class/thermal/thermal_zone*")):
        raw = _read(zone / "temp")
        if raw and raw.lstrip("-").isdigit():
            kind = _read(zone / "type") or "sensor"
            checks.append(_temperature(f"{kind} ({zone.name})", int(raw) / 1000))
    for mon in sorted(sys.glob("class/hwmon/hwmon*")):
        for sensor in sorted(mon.glob("temp*_input")):
            raw = _read(sensor)
            if raw and raw.lstrip("-").isdigit():
                what = _read(sensor.with_name(sensor.name.replace("_input", "_label")))
                chip = _read(mon / "name") or mon.name
                name = f"{chip} {what or sensor.name.removesuffix('_input')}"
                checks.append(_temperature(name, int(raw) / 1000))
    return checks or [Check("Temperature", NOT_REPORTED)]


def _temperature(name: str, celsius: float) -> Check:
    level = "bad" if celsius >= TEMP_BAD else "warn" if celsius >= TEMP_WARN else "ok"
    return Check(f"Temperature: {name}", f"{celsius:.1f} °C", level)


def throttling(sys: Path) -> list[Check]:
    """A Raspberry Pi's firmware flags (under-voltage is the classic cause of SD corruption)."""
    for path in sys.glob("devices/platform/soc/soc:firmware/get_throttled"):
        raw = _read(path)
        if raw is None:
            continue
        flags = int(raw, 16)
        said = [text for bit, text in _THROTTLE_BITS.items() if flags & (1 << bit)]
        now = flags & 0xF
        level = "bad" if now else "warn" if said else "ok"
        return [Check("Power and throttling", ", ".join(said) or "no problem since boot", level)]
    return []


def disk(path: Path) -> list[Check]:
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return [Check("Disk", f"cannot read: {exc.strerror}", "warn")]
    share = usage.free / usage.total if usage.total else 0.0
    level = "bad" if share < 0.05 else "warn" if share < 0.10 else "ok"
    value = f"{usage.free >> 20} MiB free of {usage.total >> 20} MiB ({share:.0%})"
    return [Check(f"Disk ({path})", value, level)]


def _worst(levels: list[str]) -> str:
    return max(levels, key=LEVELS.index, default="info")


def _life(raw: str) -> tuple[str, str]:
    """eMMC DEVICE_LIFE_TIME_EST: 0x01 = 0-10 % used ... 0x0A = 90-100 %, 0x0B = exceeded."""
    parts, levels = [], []
    for kind, value in zip("AB", raw.split(), strict=False):
        n = int(value, 16)
        if n == 0:
            continue  # "not defined"
        used = "past its rated life" if n >= 0x0B else f"{(n - 1) * 10}-{n * 10} % used"
        parts.append(f"type {kind}: {used}")
        levels.append("bad" if n >= 0x0A else "warn" if n >= 0x09 else "ok")
    return (", ".join(parts), _worst(levels)) if parts else (NOT_REPORTED, "info")


def storage_wear(sys: Path) -> list[Check]:
    checks = []
    for dev in sorted(sys.glob("block/mmcblk*")):
        if not (dev / "device").exists() or "boot" in dev.name:
            continue
        kind = " ".join(filter(None, (_read(dev / "device" / f) for f in ("type", "name"))))
        name = f"Wear: {dev.name} ({kind or 'MMC'})"
        life, eol = _read(dev / "device" / "life_time"), _read(dev / "device" / "pre_eol_info")
        if life is None and eol is None:
            checks.append(Check(name, NOT_REPORTED, "info", "SD cards rarely report wear"))
            continue
        value, level = _life(life) if life else (NOT_REPORTED, "info")
        if eol:
            code = int(eol, 16)
            word = {1: "normal", 2: "warning (80 % of spare blocks used)", 3: "urgent"}
            value += f"; reserve blocks: {word.get(code, 'not defined')}"
            level = _worst([level, {2: "warn", 3: "bad"}.get(code, "info")])
        checks.append(Check(name, value, level))
    return checks or [Check("Storage wear", NOT_REPORTED, "info", "no SD card or eMMC device")]


# -- services ------------------------------------------------------------------------------
MEMORY_BUDGET = 150_000_000  # issue #9: idle RAM of all EdgeGuard services under 150 MB


def service_memory(cgroup: Path = Path("/sys/fs/cgroup")) -> list[Check]:
    """Memory of the EdgeGuard systemd services (the appliance image), from their cgroups.

    ``memory.current`` counts everything the kernel charges to the unit, page cache
    included, so it is the figure the budget is held to; the anonymous part (what the
    processes themselves hold) is in the detail. Nothing is shown outside systemd (the lab)."""
    used: dict[str, tuple[int, int]] = {}
    for unit in sorted((cgroup / "system.slice").glob("edgeguard-*.service")):
        current = _read(unit / "memory.current")
        if current is None or not current.isdigit():
            continue
        anon = 0
        for line in (_read(unit / "memory.stat") or "").splitlines():
            key, _, value = line.partition(" ")
            if key == "anon" and value.isdigit():
                anon = int(value)
        used[unit.name.removesuffix(".service")] = (int(current), anon)
    if not used:
        return []
    total = sum(c for c, _ in used.values())
    anon = sum(a for _, a in used.values())
    parts = ", ".join(f"{name} {c / 1e6:.1f}" for name, (c, _) in used.items())
    return [
        Check(
            "EdgeGuard services memory",
            f"{total / 1e6:.1f} MB ({parts})",
            "ok" if total < MEMORY_BUDGET else "warn",
            f"cgroup memory.current, page cache included; anonymous {anon / 1e6:.1f} MB; "
            f"budget {MEMORY_BUDGET / 1e6:.0f} MB",
        )
    ]


def controller_pids(proc: Path) -> list[int]:
    """Processes running ``edgeguard run`` (the console script or ``-m appliance.cli``)."""
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for i, arg in enumerate(argv):
            if arg.endswith((b"edgeguard", b"appliance.cli")) and b"run" in argv[i + 1 : i + 2]:
                pids.append(int(entry.name))
                break
    return sorted(pids)


def services(proc: Path, state_dir: Path, store: ConfigStore) -> list[Check]:
    now = time.time()
    pids = controller_pids(proc)
    checks = [
        Check("Controller process", f"running (pid {', '.join(map(str, pids))})", "ok")
        if pids
        else Check("Controller process", "no `edgeguard run` process in this PID namespace",
                   "warn")
    ]  # fmt: skip
    live = store.live()
    checks.append(
        Check("Live policy", f"version {live.id} ({live.status})", "ok")
        if live
        else Check("Live policy", "none applied yet", "warn")
    )
    pending = store.pending_confirm()
    if pending is not None:
        left = _age(pending.deadline - now)
        checks.append(Check("Confirm window", f"version {pending.version}: {left} left", "warn"))
    events = store.events(1)
    if events:
        at, kind, detail = events[0]
        checks.append(Check("Newest controller event", f"{kind} at {at}", "info", detail[:200]))
    checks.append(_newest_query(state_dir / "querylog.db", now))
    return checks


def _newest_query(db: Path, now: float) -> Check:
    if not db.exists():
        return Check("Newest DNS query logged", "no query log yet", "info")
    try:
        with closing(sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)) as conn:
            newest = conn.execute("SELECT MAX(ts) FROM queries").fetchone()[0]
    except sqlite3.Error as exc:
        return Check("Newest DNS query logged", f"cannot read the query log ({exc})", "warn")
    if newest is None:
        return Check("Newest DNS query logged", "none logged", "info")
    return Check("Newest DNS query logged", f"{_age(now - float(newest))} ago", "info")


def _local(host: str) -> str | None:
    """The address to probe for a listen address, if this namespace has it."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
    except OSError:
        return None
    return host


def probe_resolver(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> str | None:
    """The answer's RCODE to an A query for a name that cannot exist, or None (no answer)."""
    qid = secrets.randbelow(65536)
    name = b"".join(bytes([len(p)]) + p for p in (b"edgeguard-health", b"invalid")) + b"\0"
    query = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(query, (host, port))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = s.recv(4096)
                if len(data) >= 12 and struct.unpack("!H", data[:2])[0] == qid:
                    code = data[3] & 0xF
                    return RCODES[code] if code < len(RCODES) else str(code)
        except OSError:
            return None
    return None


def resolver(policy: Policy | None) -> list[Check]:
    if policy is None or policy.dns is None:
        return [Check("DNS resolver", "the live policy has no dns: section", "info")]
    for address in listen_addresses(policy):
        host = _local(address.host)
        if host is None:
            continue
        rcode = probe_resolver(host, address.port)
        where = f"{host}:{address.port}" if ":" not in host else f"[{host}]:{address.port}"
        if rcode is None:
            return [Check("DNS resolver", f"no answer from {where}", "bad")]
        return [Check("DNS resolver", f"answering on {where}", "ok", f"test query: {rcode}")]
    return [
        Check("DNS resolver", "not checked", "info",
              "it listens on addresses this UI's network namespace does not have")
    ]  # fmt: skip


def report(proc: Path = Path("/proc"), sys: Path = Path("/sys")) -> dict[str, list[Check]]:
    bridge = appliance()
    state = bridge.config.state_dir
    return {
        "Hardware": [
            *temperatures(sys),
            *throttling(sys),
            *memory(proc),
            *load(proc),
            *disk(state),
            *storage_wear(sys),
        ],
        "Services": [
            *services(proc, state, bridge.engine().store),
            *service_memory(),
            *resolver(live_policy(bridge).policy),
        ],
    }


@bp.route("/health")
def index() -> Any:
    return render_template("health.html", report=report())


@api_bp.route("/health")
@api_doc("Hardware and service health: temperatures, memory, disk, storage wear, services")
def api_health() -> Response:
    sections = report()
    return jsonify(
        level=_worst([c.level for checks in sections.values() for c in checks]),
        sections={name: [asdict(c) for c in checks] for name, checks in sections.items()},
    )
