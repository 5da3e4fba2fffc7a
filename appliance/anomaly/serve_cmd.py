"""``edgeguard anomaly serve``: the live scoring process (``edgeguard run`` starts it).

It reads the live policy version from the config store, like the resolver, and follows it;
it must run in the namespace whose traffic it scores (conntrack is per namespace), which is
where ``edgeguard run`` runs.
"""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from types import FrameType

from appliance.anomaly.conntrack import ConntrackCollector, enable_accounting
from appliance.anomaly.live import EVALUATE_EVERY, AnomalyService, live_inputs
from appliance.anomaly.quarantine import NftQuarantineSets
from appliance.errors import ApplianceError
from appliance.store import ConfigStore
from policies.errors import PolicyError
from policies.loader import parse_policy
from policies.model import Policy

FOLLOW_EVERY = 2.0


def _live(store: ConfigStore, base: Path) -> tuple[int | None, Policy | None]:
    live = store.live()
    if live is None:
        return None, None
    try:
        return live.id, parse_policy(store.texts(live.id)[0], "live-policy", base_dir=base).policy
    except PolicyError as exc:
        print(f"anomaly: the live policy does not parse ({exc}); scoring off", flush=True)
        return live.id, None


def cmd_anomaly_serve(args: argparse.Namespace) -> int:
    stopping = False

    def stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    store = ConfigStore(args.state_dir)
    base = args.base or args.state_dir
    collector = ConntrackCollector(dump_every=args.dump_every)
    service = AnomalyService(
        args.state_dir,
        NftQuarantineSets(),
        live_inputs(args.state_dir, collector),
        evaluate_every=args.every,
    )
    version: int | None = -1
    next_follow = 0.0
    try:
        while not stopping:
            now = time.monotonic()
            if now >= next_follow:
                next_follow = now + FOLLOW_EVERY
                live = store.live()
                live_id = live.id if live else None
                if live_id != version:
                    version, policy = _live(store, base)
                    if policy is not None and policy.anomaly and policy.anomaly.enabled:
                        for name in enable_accounting():
                            print(f"anomaly: turned on {name}", flush=True)
                    print(service.configure(policy), flush=True)
                    try:
                        service.table_replaced()
                    except ApplianceError as exc:
                        print(f"anomaly: quarantine sets not refilled: {exc}", flush=True)
            try:
                service.step()
            except ApplianceError as exc:  # nft or conntrack trouble: say so, keep going
                print(f"anomaly: {exc}", flush=True)
                time.sleep(1.0)
            time.sleep(args.tick)
    finally:
        service.close()
        collector.close()
    return 0


def add_anomaly_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from appliance.state_dir import DEFAULT_STATE_DIR

    p = sub.add_parser("anomaly", help="live anomaly scoring")
    inner = p.add_subparsers(dest="anomaly_command", required=True)
    s = inner.add_parser("serve", help="score this namespace's flows and the query log")
    s.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    s.add_argument("--base", type=Path, help="folder the live policy's relative paths use")
    s.add_argument(
        "--every", type=float, default=EVALUATE_EVERY, help="seconds between evaluations"
    )
    s.add_argument("--dump-every", type=float, default=5.0, help="seconds between ct dumps")
    s.add_argument("--tick", type=float, default=1.0, help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_anomaly_serve)
