"""The UI's handles on the appliance: the apply engine, the query log, lists, requests.

The UI is one more client of the engine, like the CLI: it plans and applies through
``appliance.engine.Engine`` (the same lock, the same safety checks, the same history), and
the running controller (``edgeguard run``) follows the live version by itself. In the lab
the UI runs outside the router's namespace, so nft is reached with ``NetnsNft``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from flask import current_app

from appliance.engine import Engine
from appliance.nft import LibNftables, NetnsNft, NftBackend
from appliance.state_dir import live_policy_base
from appliance.store import ConfigStore
from webui.config import UiConfig


@dataclass
class Appliance:
    config: UiConfig
    nft: NftBackend | None = None  # tests inject MemoryNft
    _local: threading.local = field(default_factory=threading.local)

    def engine(self) -> Engine:
        """One engine per server thread: a SQLite connection belongs to the thread that
        opened it, and gunicorn serves the UI from several threads."""
        engine: Engine | None = getattr(self._local, "engine", None)
        if engine is None:
            nft = self.nft
            if nft is None:
                nft = NetnsNft(self.config.netns) if self.config.netns else LibNftables()
            engine = Engine(ConfigStore(self.config.state_dir), nft)
            self._local.engine = engine
        return engine

    @property
    def querylog_db(self) -> Path:
        return self.config.state_dir / "querylog.db"

    @property
    def unblock_db(self) -> Path:
        return self.config.state_dir / "unblock-requests.db"

    @property
    def policy_base(self) -> Path:
        """Where relative list and feed files of a policy edited in the UI resolve: where the
        controller resolves the live policy's (the MSP bundle's files once there are some)."""
        return live_policy_base(
            self.config.state_dir, self.config.policy_base or self.config.state_dir
        )


def appliance() -> Appliance:
    found: Appliance = current_app.extensions["edgeguard_appliance"]
    return found
