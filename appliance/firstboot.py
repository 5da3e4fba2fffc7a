"""First boot of the appliance image: the box's default policy, its network files, enrolment.

A flashed box has no policy yet, and ``edgeguard run`` without one boots into the safe
management-only ruleset: no DNS, no forwarding. So the image's first boot
(``/opt/edgeguard/lib/firstboot.sh``, as the service user) writes a policy that names the
box's real ports, and the networkd files that give those ports their addresses:

- **Ports**: the first two Ethernet ports in bus order (their sysfs device path, so PCI
  slot order, which does not change between boots) are WAN and LAN: the first is WAN.
  Predictable interface names (``enp1s0``) are stable per slot, so the names written into
  the policy stay right. ``network.json`` on the boot partition can name them instead.
- **Addresses**: WAN by DHCP (and IPv6 router advertisements); LAN ``192.168.77.1/24``, a
  subnet ISP routers rarely hand out on their own LAN (a clash would break the WAN side).
  ``network.json`` can give a static WAN, other LAN addresses and other upstreams.
- **Policy**: LAN out to the internet (masqueraded), DNS, ping and the web UI from the LAN
  to the box, management (HTTPS, SSH) from the LAN only, everything else dropped; the
  resolver forwards to Quad9 and blocks the bundled malware/phishing category.

The same first boot turns ``enrol.json`` on the boot partition into ``edgeguard sync
enrol`` (docs/image.md has both files' formats). Everything here is plain functions of
their inputs so tests can check them without a box.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_LAN = ("192.168.77.1/24",)
DEFAULT_UPSTREAMS = ("9.9.9.9:53", "149.112.112.112:53", "[2620:fe::fe]:53")
FIRST_POLICY = "first-policy.yaml"
NETWORK_DIR = "network"  # <state>/network/*.network, copied to /run/systemd/network each boot
ENROL_FIELDS = ("server", "checkin", "site", "credential")


class FirstBootError(Exception):
    """A file on the boot partition is wrong, or the box lacks what the defaults need."""


@dataclass(frozen=True)
class Wan:
    interface: str
    addresses: tuple[str, ...] = ()  # empty: DHCP
    gateway: str | None = None
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Lan:
    interface: str
    addresses: tuple[str, ...] = DEFAULT_LAN


@dataclass(frozen=True)
class BoxNetwork:
    wan: Wan
    lan: Lan
    upstreams: tuple[str, ...] = DEFAULT_UPSTREAMS
    site: str = "edgeguard"
    notes: list[str] = field(default_factory=list, compare=False)


def ethernet_ports(net_dir: Path = Path("/sys/class/net")) -> list[str]:
    """Physical Ethernet ports (``en*``/``eth*`` with a device behind them), in bus order.

    Sorted by the device's sysfs path (``/sys/devices/pci0000:00/0000:00:10.0/...``), not
    by name, so the order follows the slots even where names would sort differently."""
    ports: list[tuple[str, str]] = []
    for link in net_dir.iterdir():
        if not link.name.startswith(("en", "eth")) or not (link / "device").exists():
            continue
        if (link / "type").exists() and (link / "type").read_text().strip() != "1":
            continue  # not Ethernet (ARPHRD_ETHER)
        ports.append((str((link / "device").resolve()), link.name))
    return [name for _, name in sorted(ports)]


def _interfaces(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise FirstBootError(f"{where}: expected an address/prefix or a list of them")
    for item in items:
        try:
            ipaddress.ip_interface(item)
        except ValueError as exc:
            raise FirstBootError(f"{where}: {exc}") from exc
    return tuple(items)


def _section(data: dict[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise FirstBootError(f"network.json: {name} must be an object")
    unknown = set(section) - allowed
    if unknown:
        raise FirstBootError(f"network.json: unknown keys in {name}: {', '.join(sorted(unknown))}")
    return section


def box_network(ports: Sequence[str], data: dict[str, Any] | None = None) -> BoxNetwork:
    """WAN and LAN from the box's ports and the optional ``network.json`` (parsed)."""
    data = data or {}
    unknown = set(data) - {"wan", "lan", "upstreams", "site"}
    if unknown:
        raise FirstBootError(f"network.json: unknown keys: {', '.join(sorted(unknown))}")
    wan = _section(data, "wan", {"interface", "addresses", "gateway", "dns"})
    lan = _section(data, "lan", {"interface", "addresses"})
    notes: list[str] = []
    wan_if, lan_if = wan.get("interface"), lan.get("interface")
    spare = [p for p in ports if p not in (wan_if, lan_if)]
    if wan_if is None:
        if not spare:
            raise FirstBootError(f"no Ethernet port left for the WAN (ports: {list(ports)})")
        wan_if = spare.pop(0)
        notes.append(f"WAN port {wan_if} (first Ethernet port)")
    if lan_if is None:
        if not spare:
            raise FirstBootError(f"no second Ethernet port for the LAN (ports: {list(ports)})")
        lan_if = spare.pop(0)
        notes.append(f"LAN port {lan_if} (second Ethernet port)")
    if wan_if == lan_if:
        raise FirstBootError(f"WAN and LAN are the same port {wan_if}")
    gateway = wan.get("gateway")
    if gateway is not None:
        try:
            ipaddress.ip_address(gateway)
        except ValueError as exc:
            raise FirstBootError(f"network.json: wan.gateway: {exc}") from exc
    upstreams = data.get("upstreams", list(DEFAULT_UPSTREAMS))
    if (
        not isinstance(upstreams, list)
        or not upstreams
        or not all(isinstance(u, str) for u in upstreams)
    ):
        raise FirstBootError("network.json: upstreams must be a non-empty list of host:port")
    site = data.get("site", "edgeguard")
    if not isinstance(site, str) or not site:
        raise FirstBootError("network.json: site must be a name")
    return BoxNetwork(
        wan=Wan(
            interface=str(wan_if),
            addresses=_interfaces(wan.get("addresses", []), "network.json: wan.addresses"),
            gateway=gateway,
            dns=_interfaces(wan.get("dns", []), "network.json: wan.dns"),
        ),
        lan=Lan(
            interface=str(lan_if),
            addresses=_interfaces(lan.get("addresses", list(DEFAULT_LAN)), "network.json: lan"),
        ),
        upstreams=tuple(upstreams),
        site=site,
        notes=notes,
    )


def _yaml_list(items: Sequence[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def default_policy(net: BoxNetwork) -> str:
    """The first policy: a small office's safe default on the box's two ports."""
    wan_addresses = f"\n    addresses: {_yaml_list(net.wan.addresses)}" if net.wan.addresses else ""
    return f"""\
# Written by the image's first boot (appliance/firstboot.py): the box's default policy.
# Replace it from the web UI or by MSP sync; it is applied once, as version 1.
version: 1
site:
  name: {json.dumps(net.site)}
  description: EdgeGuard default policy (first boot)

zones:
  wan:
    interfaces: [{net.wan.interface}]{wan_addresses}
  lan:
    interfaces: [{net.lan.interface}]
    addresses: {_yaml_list(net.lan.addresses)}

rules:
  - name: lan-out
    from: lan
    to: wan
    action: accept
  - name: lan-to-box
    from: lan
    to: self
    service: [dns, ping]
    action: accept

defaults:
  - {{from: any, to: self, action: drop}}
  - {{from: any, to: any, action: drop}}

nat:
  masquerade: [wan]

management:
  zones: [lan]
  services: [ssh, https]

dns:
  upstreams: {_yaml_list(net.upstreams)}

web_filter:
  default_group: office
  groups:
    office:
      clients: [lan]
      categories: [malware-phishing]
"""


def networkd_files(net: BoxNetwork) -> dict[str, str]:
    """systemd-networkd files for the two ports (file name -> text)."""
    wan = [f"[Match]\nName={net.wan.interface}\n", "[Network]"]
    if net.wan.addresses:
        wan += [f"Address={a}" for a in net.wan.addresses]
        if net.wan.gateway:
            wan.append(f"Gateway={net.wan.gateway}")
        wan.append("IPv6AcceptRA=yes")
    else:
        wan += ["DHCP=yes"]
    wan += [f"DNS={d.split('/')[0]}" for d in net.wan.dns]
    lan = [f"[Match]\nName={net.lan.interface}\n", "[Network]"]
    lan += [f"Address={a}" for a in net.lan.addresses]
    lan += ["IPv6AcceptRA=no", "ConfigureWithoutCarrier=yes"]
    return {
        "10-edgeguard-wan.network": "# WAN (first boot)\n" + "\n".join(wan) + "\n",
        "10-edgeguard-lan.network": "# LAN (first boot)\n" + "\n".join(lan) + "\n",
    }


def configure(esp_dir: Path, state_dir: Path, net_dir: Path = Path("/sys/class/net")) -> list[str]:
    """Write ``<state>/first-policy.yaml`` and ``<state>/network/``; the lines say what."""
    if (state_dir / FIRST_POLICY).exists():
        return [f"{state_dir / FIRST_POLICY} exists: kept"]
    lines: list[str] = []
    esp_policy = esp_dir / "policy.yaml"
    data: dict[str, Any] | None = None
    if (esp_dir / "network.json").exists():
        data = _read_json(esp_dir / "network.json")
        if not isinstance(data, dict):
            raise FirstBootError(f"{esp_dir / 'network.json'}: expected an object")
        lines.append(f"network settings from {esp_dir / 'network.json'}")
    net = box_network(ethernet_ports(net_dir), data)
    lines += net.notes
    out = state_dir / NETWORK_DIR
    out.mkdir(mode=0o755, exist_ok=True)
    for name, text in networkd_files(net).items():
        (out / name).write_text(text, encoding="utf-8")
    lan = ", ".join(net.lan.addresses)
    wan = ", ".join(net.wan.addresses) or "DHCP"
    lines.append(f"WAN {net.wan.interface} ({wan}), LAN {net.lan.interface} ({lan})")
    if esp_policy.exists():
        shutil.copyfile(esp_policy, state_dir / FIRST_POLICY)
        lines.append(f"first policy: {esp_policy} (as given)")
    else:
        (state_dir / FIRST_POLICY).write_text(default_policy(net), encoding="utf-8")
        lines.append("first policy: the default (LAN out, DNS filtered, management from LAN)")
    return lines


def _read_json(path: Path, where: str | None = None) -> Any:
    """A technician's JSON file from the boot partition, or FirstBootError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FirstBootError(f"{where or path}: {exc}") from exc


# -- enrolment from the boot partition -------------------------------------------------------
def enrol_argv(esp_dir: Path, state_dir: Path) -> list[str]:
    """``edgeguard sync enrol`` arguments from ``<esp>/enrol.json``; copies its files in.

    The boot partition is FAT and read-only at run time, and the agent keeps the CA file's
    path: so the root and CA files are copied to ``<state>/sync-request/`` first and the
    arguments point there."""
    path = esp_dir / "enrol.json"
    data = _read_json(path)
    if not isinstance(data, dict):
        raise FirstBootError(f"{path}: expected an object")
    allowed = {*ENROL_FIELDS, "root", "root_file", "root_keyid", "ca_file"}
    unknown = set(data) - allowed
    if unknown:
        raise FirstBootError(f"{path}: unknown keys: {', '.join(sorted(unknown))}")
    missing = [k for k in ENROL_FIELDS if not isinstance(data.get(k), str) or not data[k]]
    if missing:
        raise FirstBootError(f"{path}: missing {', '.join(missing)}")
    if ("root" in data) == ("root_file" in data):
        raise FirstBootError(
            f"{path}: give the MSP's root.json, inline as root or as root_file next to it "
            "(first boot has no network to fetch it)"
        )
    request = state_dir / "sync-request"
    request.mkdir(mode=0o700, exist_ok=True)
    root = data["root"] if "root" in data else _esp_file(esp_dir, data["root_file"], path)
    if isinstance(root, Path):
        root = _read_json(root, f"{path}: root_file")
    if not isinstance(root, dict):
        raise FirstBootError(f"{path}: root must be the root.json object")
    (request / "root.json").write_text(json.dumps(root), encoding="utf-8")
    argv = ["sync", "enrol", "--state-dir", str(state_dir)]
    for key in ENROL_FIELDS:
        argv += [f"--{key}", data[key]]
    argv += ["--root", str(request / "root.json")]
    if data.get("root_keyid"):
        argv += ["--root-keyid", str(data["root_keyid"])]
    if data.get("ca_file"):
        ca = request / "msp-ca.pem"
        shutil.copyfile(_esp_file(esp_dir, data["ca_file"], path), ca)
        argv += ["--ca", str(ca)]
    return argv


def _esp_file(esp_dir: Path, name: Any, where: Path) -> Path:
    if not isinstance(name, str) or "/" in name or name.startswith("."):
        raise FirstBootError(f"{where}: {name!r}: give a file name next to enrol.json")
    if not (esp_dir / name).is_file():
        raise FirstBootError(f"{where}: {esp_dir / name} does not exist")
    return esp_dir / name


def enrol(esp_dir: Path, state_dir: Path) -> tuple[int, str]:
    """Run ``edgeguard sync enrol`` for ``<esp>/enrol.json``: (exit code, its output)."""
    argv = enrol_argv(esp_dir, state_dir)
    done = subprocess.run(  # noqa: S603 - our own interpreter and module, argv from the file
        [sys.executable, "-m", "appliance.cli", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    out = (done.stdout + done.stderr).strip()
    return done.returncode, out.replace(_secret(argv), "***")


def _secret(argv: list[str]) -> str:
    return argv[argv.index("--credential") + 1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.firstboot", description=__doc__)
    parser.add_argument("action", choices=["configure", "enrol"])
    parser.add_argument("--esp", type=Path, default=Path("/boot/efi/edgeguard"))
    parser.add_argument("--state-dir", type=Path, default=Path("/var/lib/edgeguard"))
    parser.add_argument("--net-dir", type=Path, default=Path("/sys/class/net"))
    args = parser.parse_args(argv)
    try:
        if args.action == "configure":
            for line in configure(args.esp, args.state_dir, args.net_dir):
                print(line, flush=True)
            return 0
        code, out = enrol(args.esp, args.state_dir)
    except (OSError, FirstBootError) as exc:
        print(f"{args.action} failed: {exc}", file=sys.stderr, flush=True)
        return 2
    print(out, flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
