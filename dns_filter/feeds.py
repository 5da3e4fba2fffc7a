"""What the resolver hands to the outside world while it answers: set feeds and block notes.

The resolver never talks to nftables or HTTP itself (it stays testable without root); the
appliance injects implementations of these small protocols:

* ``SetFeed``: addresses the resolver answered for names a firewall rule names (like
  dnsmasq's ``nftset``). ``add`` is called on the answer path, so it must only queue the
  element; the appliance's feeder batches them into nftables off the path.
* ``BlockNote``: why a name was blocked for a client, kept for the block page.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol


class SetFeed(Protocol):
    def add(self, set_name: str, family: int, address: str, timeout: int) -> None:
        """Queue ``address`` for nft set ``set_name`` (e.g. ``dom_iot-cloud_v4``) with a
        timeout in seconds. Must not block: it runs on the DNS answer path."""


@dataclass(frozen=True, slots=True)
class BlockNote:
    """A block the resolver answered: for whom, which name, and which rule and list."""

    client: str
    qname: str
    group: str
    rule: str | None
    list_name: str | None
    at: float


class RecentBlocks:
    """The last blocks per (client, name), bounded; read by the block page.

    A plain ordered dict under a lock: the resolver writes from its answer thread, the block
    page reads from its HTTP threads. Bounded so a client querying random blocked names
    cannot grow it without limit.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._notes: OrderedDict[tuple[str, str], BlockNote] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def record(self, note: BlockNote) -> None:
        key = (note.client, note.qname)
        with self._lock:
            self._notes[key] = note
            self._notes.move_to_end(key)
            if len(self._notes) > self._max:
                self._notes.popitem(last=False)

    def lookup(self, client: str, host: str) -> BlockNote | None:
        """The note for ``host`` as asked by ``client``; else the client's latest block of a
        parent or child of ``host``; else None."""
        host = host.lower().rstrip(".")
        with self._lock:
            note = self._notes.get((client, host))
            if note is not None:
                return note
            for (c, name), n in reversed(self._notes.items()):
                if c == client and (host.endswith("." + name) or name.endswith("." + host)):
                    return n
        return None

    def __len__(self) -> int:
        return len(self._notes)
