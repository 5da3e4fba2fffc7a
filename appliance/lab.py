"""The office lab: an EdgeGuard router and its networks, built from network namespaces.

``Lab.up()`` builds seven namespaces named ``<prefix>-<role>`` and wires each client
network to the router with a veth pair. Inside the router the interfaces carry the names
the example firewall policies use (wan0, lan0, guest0, iot0, dmz0, mgmt0), so a compiled
ruleset can be loaded into ``lab.ns("router")`` unchanged and tested with real packets::

    with Lab.up("eglab") as lab:
        lab.start_servers()
        [res] = lab.probe("lan", [Probe("tcp", lab.server(), 80)])

The "internet" namespace has no IPv4 route back to 192.0.2.0/24, so IPv4 from the
client networks only gets answers when the router masquerades: that is how tests see NAT.
Nothing here touches the machine's own namespace; ``down()`` (and ``lab_down``) remove
every namespace with the prefix, and the kernel then destroys the veth pairs with them.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from appliance import netns
from appliance.errors import LabError
from appliance.labprobe import Probe, ProbeResult

__all__ = [
    "INET_SERVERS4",
    "INET_SERVERS6",
    "LINKS",
    "ROLES",
    "SERVER_TCP_PORTS",
    "SERVER_UDP_PORTS",
    "Lab",
    "LinkPlan",
    "lab_down",
]


@dataclass(frozen=True)
class LinkPlan:
    """One router interface and the peer namespace at the other end of its veth pair.

    Addresses are in CIDR form; the peer's first v4/v6 address is its "main" address and
    the router address is the peer's default gateway.
    """

    router_if: str
    peer_if: str
    router4: str
    router6: str
    peer4: tuple[str, ...]
    peer6: tuple[str, ...]


LINKS: Mapping[str, LinkPlan] = {
    "inet": LinkPlan(
        "wan0", "isp0", "203.0.113.2/24", "2001:db8:ffff::2/64",
        ("203.0.113.1/24",), ("2001:db8:ffff::1/64",),
    ),
    "lan": LinkPlan(
        "lan0", "eth0", "192.0.2.1/26", "2001:db8:0:10::1/64",
        ("192.0.2.10/26", "192.0.2.11/26"), ("2001:db8:0:10::10/64", "2001:db8:0:10::11/64"),
    ),
    "guest": LinkPlan(
        "guest0", "eth0", "192.0.2.65/26", "2001:db8:0:20::1/64",
        ("192.0.2.70/26",), ("2001:db8:0:20::70/64",),
    ),
    "iot": LinkPlan(
        "iot0", "eth0", "192.0.2.129/27", "2001:db8:0:30::1/64",
        ("192.0.2.140/27",), ("2001:db8:0:30::40/64",),
    ),
    "dmz": LinkPlan(
        "dmz0", "eth0", "192.0.2.161/27", "2001:db8:0:40::1/64",
        ("192.0.2.170/27",), ("2001:db8:0:40::70/64",),
    ),
    "mgmt": LinkPlan(
        "mgmt0", "eth0", "192.0.2.193/27", "2001:db8:0:50::1/64",
        ("192.0.2.200/27",), ("2001:db8:0:50::200/64",),
    ),
}  # fmt: skip
"""The addressing plan, keyed by the role of the namespace behind each router interface."""

ROLES: tuple[str, ...] = ("router", *LINKS)
INET_SERVERS4: tuple[str, ...] = (
    "198.51.100.10/24", "198.51.100.20/32", "198.51.100.66/32",
    "198.51.100.30/32", "198.51.100.40/32",
)  # fmt: skip
"""The "internet servers" on inet's srv0; .66 is the host block-list tests put on a list,
.30 the web filter's social network, .40 the IoT vendor's cloud."""
INET_SERVERS6: tuple[str, ...] = ("2001:db8:100::10/64", "2001:db8:100::66/128")
INET_ROUTE6 = ("2001:db8::/48", "2001:db8:ffff::2")
SERVER_TCP_PORTS: tuple[int, ...] = (22, 80, 443, 853, 8080)
SERVER_UDP_PORTS: tuple[int, ...] = (53, 123, 5000)
SERVER_ROLES: tuple[str, ...] = ("inet", "dmz")
_MAX_PREFIX = 31 - len("-router")


def _bare(cidr: str) -> str:
    return cidr.split("/", 1)[0]


def _check_prefix(prefix: str) -> str:
    netns.validate_name(prefix)
    if len(prefix) > _MAX_PREFIX:
        raise LabError(f"lab prefix {prefix!r} too long (max {_MAX_PREFIX} characters)")
    return prefix


def _stop(proc: subprocess.Popen[str], grace: float = 1.0) -> None:
    """Terminate one process we started, escalating to SIGKILL if it ignores SIGTERM."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _kill_pids(pids: Iterable[int]) -> None:
    """SIGKILL leftover lab processes by pid; they hold namespaces (and veths) alive."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def lab_down(prefix: str = "eglab") -> list[str]:
    """Remove every namespace named ``<prefix>-*`` and the processes inside; return the names.

    This is the crash-recovery path (``edgeguard lab down``) as well as ``Lab.down``'s
    last step, so it assumes nothing about how far a previous ``up`` got.
    """
    names = netns.list_with_prefix(f"{_check_prefix(prefix)}-")
    for name in names:
        _kill_pids(netns.pids(name))
    errors = []
    for name in names:
        try:
            netns.delete(name)
        except LabError as exc:
            errors.append(str(exc))
    if errors:
        raise LabError("lab teardown incomplete:\n" + "\n".join(errors))
    return names


class Lab:
    """A running lab; build it with :meth:`up`, remove it with :meth:`down` (or ``with``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = _check_prefix(prefix)
        self._procs: list[subprocess.Popen[str]] = []

    # ----------------------------------------------------------------- lifecycle
    @classmethod
    def up(cls, prefix: str = "eglab") -> Lab:
        """Build the lab (after removing leftovers with the same prefix) and return it.

        If any step fails, everything built so far is removed before the error propagates.
        """
        lab = cls(prefix)
        lab_down(prefix)
        try:
            lab._build()
        except BaseException:
            lab.down()
            raise
        return lab

    def down(self) -> None:
        """Stop the lab's processes and delete its namespaces; safe to call repeatedly."""
        procs, self._procs = self._procs, []
        for proc in procs:
            _stop(proc)
        lab_down(self.prefix)

    @property
    def processes(self) -> list[subprocess.Popen[str]]:
        """Processes the lab started (servers) that ``down()`` will stop."""
        return list(self._procs)

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def _build(self) -> None:
        names = [self.ns(role) for role in ROLES]
        netns.ip(["-batch", "-"], input="".join(f"netns add {n}\n" for n in names))
        # DAD off before any interface exists, so new interfaces inherit it from "default"
        # and addresses are usable at once instead of "tentative" for a second or two.
        dad = ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"]
        fwd = ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
        for role in ROLES:
            extra = fwd if role == "router" else []
            netns.run(self.ns(role), ["sysctl", "-q", "-w", *dad, *extra])
        # Router side: create every veth pair directly between the two namespaces (the
        # root namespace never sees them), then address and raise the router ends.
        # Explicit, distinct ifindexes: if both ends of a veth had the same ifindex (both are
        # "2" in fresh namespaces) the kernel's linkwatch treats carrier-up as non-urgent and
        # leaves the link NO-CARRIER, dropping packets, for up to a second.
        cmds = ["link set lo up"]
        for i, (role, link) in enumerate(LINKS.items()):
            cmds += [
                f"link add {link.router_if} index {100 + i} type veth"
                f" peer name {link.peer_if} index {200 + i} netns {self.ns(role)}",
                f"addr add {link.router4} dev {link.router_if}",
                f"addr add {link.router6} dev {link.router_if} nodad",
                f"link set {link.router_if} up",
            ]
        self._batch("router", cmds)
        self._make_srv0()
        for role, link in LINKS.items():
            self._batch(role, self._peer_commands(role, link))
        wan = LINKS["inet"]
        self._batch(
            "router",
            [f"route add 0.0.0.0/0 via {_bare(wan.peer4[0])}",
             f"route add ::/0 via {_bare(wan.peer6[0])}"],
        )  # fmt: skip
        self._await_links()

    def _await_links(self, timeout: float = 3.0) -> None:
        """Wait until every interface is operationally up with no tentative address.

        Carrier and operstate changes reach userspace asynchronously (the kernel's linkwatch
        work), and until then a veth drops what it is given; tests must not race that.
        """
        deadline = time.monotonic() + timeout
        pending = list(ROLES)
        while pending:
            pending = [role for role in pending if not self._links_ready(role)]
            if pending and time.monotonic() > deadline:
                raise LabError(f"lab interfaces not up after {timeout}s in: {pending}")
            if pending:
                time.sleep(0.01)

    def _links_ready(self, role: str) -> bool:
        for link in json.loads(netns.ip(["-j", "addr"], ns=self.ns(role)).stdout):
            if link.get("ifname") == "lo":
                continue
            if link.get("operstate") not in ("UP", "UNKNOWN") or "NO-CARRIER" in link["flags"]:
                return False
            if any(a.get("tentative") for a in link.get("addr_info", [])):
                return False
        return True

    def _peer_commands(self, role: str, link: LinkPlan) -> list[str]:
        cmds = ["link set lo up"]
        cmds += [f"addr add {a} dev {link.peer_if}" for a in link.peer4]
        # IPv4 picks the first (primary) address as source, IPv6 the newest of equal rank:
        # add v6 addresses last-to-first so both families default to the first client.
        cmds += [f"addr add {a} dev {link.peer_if} nodad" for a in reversed(link.peer6)]
        cmds.append(f"link set {link.peer_if} up")
        if role == "inet":
            cmds += [f"addr add {a} dev srv0" for a in INET_SERVERS4]
            cmds += [f"addr add {a} dev srv0 nodad" for a in INET_SERVERS6]
            cmds += ["link set srv0 up", "route add {} via {}".format(*INET_ROUTE6)]
        else:
            cmds += [
                f"route add 0.0.0.0/0 via {_bare(link.router4)}",
                f"route add ::/0 via {_bare(link.router6)}",
            ]
        return cmds

    def _make_srv0(self) -> None:
        """Give inet a ``srv0`` for the server addresses: a dummy, else a self-contained veth.

        Some kernels (e.g. minimal VM kernels) lack the dummy driver; a veth pair whose both
        ends live in inet behaves the same for addresses that are only ever local.
        """
        ns = self.ns("inet")
        if netns.ip(["link", "add", "srv0", "type", "dummy"], ns=ns, check=False).returncode:
            netns.ip(["link", "add", "srv0", "type", "veth", "peer", "name", "srv0p"], ns=ns)
            netns.ip(["link", "set", "srv0p", "up"], ns=ns)

    def _batch(self, role: str, commands: Sequence[str]) -> None:
        netns.ip(["-batch", "-"], ns=self.ns(role), input="\n".join(commands) + "\n")

    # ----------------------------------------------------------------- the plan
    def ns(self, role: str) -> str:
        """Namespace name for a role (``router``, ``lan``, ``guest``, ``iot``, ...)."""
        if role not in ROLES:
            raise LabError(f"unknown lab role {role!r}; roles are {', '.join(ROLES)}")
        return f"{self.prefix}-{role}"

    @property
    def namespaces(self) -> list[str]:
        """All namespace names of this lab, router first."""
        return [self.ns(role) for role in ROLES]

    def addr(self, role: str, index: int = 0) -> str:
        """IPv4 address of a peer namespace's interface (``index`` 1 = second LAN client)."""
        return _bare(self._link(role).peer4[index])

    def addr6(self, role: str, index: int = 0) -> str:
        """IPv6 address of a peer namespace's interface."""
        return _bare(self._link(role).peer6[index])

    def router_addr(self, role: str) -> str:
        """Router's IPv4 address on the link to ``role`` (``inet`` gives the WAN address)."""
        return _bare(self._link(role).router4)

    def router_addr6(self, role: str) -> str:
        """Router's IPv6 address on the link to ``role``."""
        return _bare(self._link(role).router6)

    def iface(self, role: str) -> str:
        """Router interface facing ``role`` (``lan`` -> ``lan0``, ``inet`` -> ``wan0``)."""
        return self._link(role).router_if

    def server(self, index: int = 0) -> str:
        """IPv4 address of an internet server (0: 198.51.100.10, 1: .20, 2: .66 listed)."""
        return _bare(INET_SERVERS4[index])

    def server6(self, index: int = 0) -> str:
        """IPv6 address of an internet server (0: 2001:db8:100::10, 1: ::66 listed)."""
        return _bare(INET_SERVERS6[index])

    def _link(self, role: str) -> LinkPlan:
        if role not in LINKS:
            raise LabError(f"no link for role {role!r}; links are {', '.join(LINKS)}")
        return LINKS[role]

    # ----------------------------------------------------------------- the router
    def nft(self, args: Sequence[str], input_text: str | None = None) -> str:
        """Run nft in the router namespace (TZ=UTC) and return its stdout."""
        return netns.nft(self.ns("router"), args, input_text).stdout

    def load_ruleset(self, ruleset_text: str | None) -> None:
        """Replace the router's ruleset atomically with ``ruleset_text`` (None: empty it)."""
        text = "flush ruleset\n" + (ruleset_text or "")
        self.nft(["-f", "-"], text)

    # ----------------------------------------------------------------- traffic
    def start_servers(self, timeout: float = 5.0) -> None:
        """Start labserver in ``inet`` and ``dmz`` and wait until both print ``ready``."""
        argv = [
            sys.executable, "-m", "appliance.labserver",
            "--tcp", ",".join(map(str, SERVER_TCP_PORTS)),
            "--udp", ",".join(map(str, SERVER_UDP_PORTS)),
        ]  # fmt: skip
        started = []
        for role in SERVER_ROLES:
            proc = netns.popen(self.ns(role), argv)  # stderr piped: it is silent unless dying
            self._procs.append(proc)
            started.append((role, proc))
        deadline = time.monotonic() + timeout
        for role, proc in started:
            self._await_ready(role, proc, deadline)

    @staticmethod
    def _await_ready(role: str, proc: subprocess.Popen[str], deadline: float) -> None:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if sel.select(left):
                    line = proc.stdout.readline()
                    if line.strip() == "ready":
                        return
                    if not line:
                        break
        if proc.poll() is None:
            proc.kill()
        _out, err = proc.communicate(timeout=5)
        raise LabError(
            f"labserver in {role} did not become ready (exit status {proc.returncode}):\n"
            f"{err.strip()}"
        )

    def probe(self, role: str, probes: Sequence[Probe | Mapping[str, Any]]) -> list[ProbeResult]:
        """Run a batch of probes concurrently from ``role``'s namespace; results in order."""
        batch = [p if isinstance(p, Probe) else Probe.from_dict(p) for p in probes]
        if not batch:
            return []
        limit = max(p.timeout for p in batch) + 10
        proc = netns.run(
            self.ns(role),
            [sys.executable, "-m", "appliance.labprobe"],
            input=json.dumps([p.to_dict() for p in batch]),
            timeout=limit,
        )
        results = [ProbeResult.from_dict(r) for r in json.loads(proc.stdout)]
        if len(results) != len(batch):
            raise LabError(f"labprobe returned {len(results)} results for {len(batch)} probes")
        return results
