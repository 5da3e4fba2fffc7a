"""Safe helpers for network namespaces, the only place the lab and its tests touch the kernel.

Everything here runs programs from argv lists (never a shell), validates namespace names
before they reach ``ip``, and keeps nftables strictly inside namespaces: there is no helper
that runs ``nft`` in the machine's own namespace, so a test cannot flush the host's ruleset
by accident.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, Any

from appliance.errors import LabError

__all__ = [
    "NAME_RE",
    "NETNS_RUN_DIR",
    "create",
    "delete",
    "exists",
    "ip",
    "list_with_prefix",
    "nft",
    "nft_check",
    "pids",
    "popen",
    "run",
    "scratch_namespace",
    "validate_name",
]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
"""Allowed namespace names: short, lower-case, and safe as a path component under /run/netns."""

NETNS_RUN_DIR = "/run/netns"
"""Where iproute2 keeps its named-namespace bind mounts (``ip netns list`` reads this dir)."""

NFT_ENV = {"TZ": "UTC"}
"""Compiled rulesets give ``meta hour`` in UTC; nft converts hour strings with the process TZ."""

_counter = itertools.count(1)


def validate_name(name: str) -> str:
    """Return ``name`` if it is an acceptable namespace name, else raise LabError.

    Names end up as argv items and as paths under /run/netns, so anything outside the
    conservative pattern (slashes, dots, leading dashes that look like options) is refused.
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise LabError(f"invalid namespace name {name!r}: must match {NAME_RE.pattern}")
    return name


def _exec(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = 10,
    check: bool = True,
    env_extra: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv (no shell), capturing text output; raise LabError with stderr if it fails."""
    env = {**os.environ, **env_extra} if env_extra else None
    try:
        proc = subprocess.run(  # noqa: S603 - argv list, names validated by callers
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"command timed out after {timeout}s: {' '.join(argv)}") from exc
    except OSError as exc:
        raise LabError(f"cannot run {' '.join(argv)}: {exc}") from exc
    if check and proc.returncode != 0:
        raise LabError(
            f"command failed (exit {proc.returncode}): {' '.join(argv)}\n{proc.stderr.strip()}"
        )
    return proc


def ip(
    args: Sequence[str],
    *,
    ns: str | None = None,
    input: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``ip [-n ns] args``; with ``ns`` the command acts on that namespace only.

    ``ip -n`` switches namespace inside iproute2 itself, which is cheaper than
    ``ip netns exec`` and is how the lab configures links, addresses and routes.
    """
    argv = ["ip"]
    if ns is not None:
        argv += ["-n", validate_name(ns)]
    return _exec([*argv, *args], input=input, check=check, timeout=30)


def exists(name: str) -> bool:
    """True if the named namespace exists (its bind mount is present)."""
    return os.path.exists(os.path.join(NETNS_RUN_DIR, validate_name(name)))


def list_with_prefix(prefix: str) -> list[str]:
    """Names of existing namespaces that start with ``prefix``, sorted."""
    try:
        names = os.listdir(NETNS_RUN_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix) and NAME_RE.fullmatch(n))


def create(name: str) -> None:
    """Create a namespace; raise LabError if it already exists or cannot be made."""
    _exec(["ip", "netns", "add", validate_name(name)])


def delete(name: str) -> None:
    """Delete a namespace if it exists (idempotent).

    The kernel frees the namespace, and every interface inside it (veth peers included),
    once the last process in it has exited; callers must stop their processes first.
    """
    validate_name(name)
    if not exists(name):
        return
    proc = _exec(["ip", "netns", "delete", name], check=False)
    if proc.returncode != 0 and exists(name):
        raise LabError(f"cannot delete namespace {name}: {proc.stderr.strip()}")


def pids(name: str) -> list[int]:
    """PIDs of processes running in the namespace (empty if it does not exist)."""
    if not exists(name):
        return []
    proc = _exec(["ip", "netns", "pids", validate_name(name)], check=False)
    return [int(tok) for tok in proc.stdout.split() if tok.isdigit()]


def _netns_exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    if not argv:
        raise LabError("empty command")
    return ["ip", "netns", "exec", validate_name(ns), *argv]


def run(
    ns: str,
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = 10,
    check: bool = True,
    env_extra: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside namespace ``ns`` and wait for it (``ip netns exec``).

    With ``check`` a non-zero exit raises LabError carrying the command and its stderr.
    """
    return _exec(
        _netns_exec_argv(ns, argv), input=input, timeout=timeout, check=check, env_extra=env_extra
    )


def popen(
    ns: str,
    argv: Sequence[str],
    *,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = subprocess.PIPE,
    stderr: int | IO[Any] | None = subprocess.PIPE,
    env_extra: Mapping[str, str] | None = None,
) -> subprocess.Popen[str]:
    """Start a long-running program (a server) inside ``ns`` without waiting for it.

    ``ip netns exec`` execs the program after switching namespace, so the returned
    process's pid is the program itself and terminating it needs no process-group tricks.
    """
    env = {**os.environ, **env_extra} if env_extra else None
    try:
        return subprocess.Popen(  # noqa: S603 - argv list, namespace name validated
            _netns_exec_argv(ns, argv),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            text=True,
            env=env,
        )
    except OSError as exc:
        raise LabError(f"cannot start {' '.join(argv)} in {ns}: {exc}") from exc


def nft(
    ns: str,
    args: Sequence[str],
    input_text: str | None = None,
    *,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``nft args`` inside ``ns`` with TZ=UTC; ``input_text`` is fed on stdin.

    To load a ruleset pass ``["-f", "-"]`` and the text. There is deliberately no way to
    target the root namespace from here.
    """
    return run(ns, ["nft", *args], input=input_text, check=check, env_extra=NFT_ENV)


def _unique_name(prefix: str) -> str:
    return validate_name(f"{prefix}-{os.getpid()}-{next(_counter)}")


@contextmanager
def scratch_namespace(prefix: str) -> Iterator[str]:
    """Yield the name of a fresh, empty namespace and delete it afterwards, even on error."""
    name = _unique_name(prefix)
    create(name)
    try:
        yield name
    finally:
        delete(name)


def nft_check(ruleset_text: str) -> tuple[bool, str]:
    """Dry-run a ruleset with ``nft -c -f -`` in a throwaway namespace; return (ok, stderr).

    ``nft -c`` still needs the kernel to resolve things like interface names, and running it
    in an empty namespace guarantees the check can never alter a live ruleset.
    """
    with scratch_namespace("egchk") as ns:
        proc = nft(ns, ["-c", "-f", "-"], ruleset_text, check=False)
    return proc.returncode == 0, proc.stderr
