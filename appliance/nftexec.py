"""Run one NftBackend operation in this process's network namespace, for ``NetnsNft``.

    ip netns exec NS python -m appliance.nftexec replace < ruleset.nft

Reads the ruleset from stdin (never from argv), answers with one JSON line
``{"ok": true, "value": ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import json
import sys

from appliance.errors import ApplianceError
from appliance.nft import LibNftables

OPERATIONS = ("replace", "remove", "exists", "supports_flowtable")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in OPERATIONS:
        print(json.dumps({"ok": False, "error": f"usage: nftexec {'|'.join(OPERATIONS)}"}))
        return 2
    op = argv[0]
    try:
        nft = LibNftables()
        if op == "replace":
            nft.replace(sys.stdin.read())
            value: object = None
        elif op == "remove":
            nft.remove()
            value = None
        elif op == "exists":
            value = nft.exists()
        else:
            value = nft.supports_flowtable()
    except ApplianceError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 1
    print(json.dumps({"ok": True, "value": value}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
