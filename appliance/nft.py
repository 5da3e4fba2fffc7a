"""The only code that talks to nftables: replace, list or remove ``table inet edgeguard``.

Everything goes through libnftables (Debian's python3-nftables) in this process, which acts
on the network namespace the process runs in. One ``cmd()`` call is one kernel
transaction: we send "create-then-delete our table, then define it" as one batch, so the
kernel swaps the whole table atomically (no window without rules) or, on any error,
keeps the old one. Other tables (docker's, say) are never touched.

``MemoryNft`` is a real in-memory stand-in with the same contract for tests without root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Protocol

from appliance.errors import ApplyError
from policies.compiler import TABLE_FAMILY, TABLE_NAME

_TABLE = f"{TABLE_FAMILY} {TABLE_NAME}"
_REPLACE_PREFIX = f"table {_TABLE}\ndelete table {_TABLE}\n"


class NftBackend(Protocol):
    def replace(self, ruleset_text: str) -> None:
        """Swap our table for ``ruleset_text`` in one transaction; ApplyError if refused."""

    def remove(self) -> None:
        """Delete our table (no-op when absent)."""

    def exists(self) -> bool:
        """Is our table loaded? (cheap: does not list 100,000 set elements)"""

    def supports_flowtable(self) -> bool:
        """Can this kernel offload flows? (many lack CONFIG_NF_FLOW_TABLE)"""


class LibNftables:
    def __init__(self) -> None:
        try:
            import nftables
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise ApplyError(
                "the nftables Python binding is missing: apt-get install python3-nftables "
                "and create the venv with --system-site-packages"
            ) from exc
        # nft converts `meta hour` times with the process time zone; compiled rulesets are UTC.
        os.environ["TZ"] = "UTC"
        time.tzset()
        self._nft = nftables.Nftables()
        self._nft.set_handle_output(False)

    def _cmd(self, text: str) -> tuple[int, str, str]:
        rc, out, err = self._nft.cmd(text)
        return int(rc), str(out), str(err)

    def replace(self, ruleset_text: str) -> None:
        rc, _, err = self._cmd(_REPLACE_PREFIX + ruleset_text)
        if rc != 0:
            raise ApplyError(
                f"nft refused the ruleset; the previous ruleset is still enforced:\n{err.strip()}"
            )

    def remove(self) -> None:
        rc, _, err = self._cmd(f"table {_TABLE}\ndelete table {_TABLE}\n")
        if rc != 0:
            raise ApplyError(f"could not remove table {_TABLE}: {err.strip()}")

    def exists(self) -> bool:
        rc, out, err = self._cmd(f"list tables {TABLE_FAMILY}")
        if rc != 0:
            raise ApplyError(f"could not list tables: {err.strip()}")
        return f"table {_TABLE}" in out.splitlines()

    def counters(self) -> list[dict[str, object]]:
        """Every counter in our table: chain, rule comment, packets, bytes.

        Listed tersely (no set elements: a 100k-address block list would cost seconds) and
        as JSON, so nothing is parsed out of text.
        """
        self._nft.set_terse_output(True)
        self._nft.set_json_output(True)
        try:
            rc, out, err = self._cmd(f"list table {_TABLE}")
        finally:
            self._nft.set_json_output(False)
            self._nft.set_terse_output(False)
        if rc != 0:
            raise ApplyError(f"could not list our table: {err.strip()}")
        found: list[dict[str, object]] = []
        for item in json.loads(out).get("nftables", []):
            rule = item.get("rule") if isinstance(item, dict) else None
            if not isinstance(rule, dict):
                continue
            for expr in rule.get("expr", []):
                counter = expr.get("counter") if isinstance(expr, dict) else None
                if isinstance(counter, dict):
                    found.append(
                        {
                            "chain": rule.get("chain"),
                            "comment": rule.get("comment", ""),
                            "packets": int(counter.get("packets", 0)),
                            "bytes": int(counter.get("bytes", 0)),
                        }
                    )
        return found

    def supports_flowtable(self) -> bool:
        # A dry run goes through the kernel's checks but commits nothing.
        self._nft.set_dry_run(True)
        try:
            rc, _, _ = self._cmd(
                f"table {TABLE_FAMILY} {TABLE_NAME}_probe {{ flowtable ft {{ "
                'hook ingress priority filter; devices = { "lo" }; }; }'
            )
        finally:
            self._nft.set_dry_run(False)
        return rc == 0


class NetnsNft:
    """The same contract in another network namespace (``ip netns exec NS``): for a process
    that is not in the router's namespace, such as the lab's web UI on the host."""

    def __init__(self, namespace: str) -> None:
        from appliance.netns import validate_name

        validate_name(namespace)
        self.namespace = namespace

    def _run(self, op: str, text: str = "") -> object:
        proc = subprocess.run(  # noqa: S603 - fixed argv, validated namespace name
            ["ip", "netns", "exec", self.namespace, sys.executable, "-m", "appliance.nftexec", op],
            input=text,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        try:
            answer = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError) as exc:
            raise ApplyError(f"nft in {self.namespace} failed: {proc.stderr.strip()}") from exc
        if not answer.get("ok"):
            raise ApplyError(str(answer.get("error")))
        return answer.get("value")

    def replace(self, ruleset_text: str) -> None:
        self._run("replace", ruleset_text)

    def remove(self) -> None:
        self._run("remove")

    def exists(self) -> bool:
        return bool(self._run("exists"))

    def supports_flowtable(self) -> bool:
        return bool(self._run("supports_flowtable"))


class MemoryNft:
    """Test double: keeps the "kernel" table as text; refuses rulesets containing ``fail_on``."""

    def __init__(self, fail_on: str | None = None, *, flowtable: bool = False) -> None:
        self.table: str | None = None
        self.flowtable = flowtable
        self.fail_on = fail_on
        self.transactions = 0

    def replace(self, ruleset_text: str) -> None:
        self.transactions += 1
        if self.fail_on and self.fail_on in ruleset_text:
            raise ApplyError(
                f"nft refused the ruleset; the previous ruleset is still enforced: {self.fail_on}"
            )
        self.table = ruleset_text

    def remove(self) -> None:
        self.transactions += 1
        self.table = None

    def exists(self) -> bool:
        return self.table is not None

    def supports_flowtable(self) -> bool:
        return self.flowtable
