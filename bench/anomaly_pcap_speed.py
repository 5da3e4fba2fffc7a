"""How fast ``edgeguard score`` reads a capture, stage by stage (issue #7: 1M packets < 60 s).

Writes a synthetic office capture with ``bench/anomaly/make_pcap.py`` (unless ``--pcap`` is
given), then times, on one core:

1. framing only: scapy's ``RawPcapReader`` yielding records;
2. + header parsing (``pcap.read_capture``);
3. + flow aggregation and DNS (``flowtable.FlowTable``);
4. + scoring (``engine.Scorer.run``), in process;
5. ``python -m appliance.cli score FILE`` as a new process: everything a user waits for,
   interpreter start and imports included.

    python bench/anomaly_pcap_speed.py [--packets 1000000] [--pcap FILE] [--keep]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.anomaly.flowtable import FlowTable  # noqa: E402
from appliance.anomaly.pcap import CaptureStats, read_capture  # noqa: E402
from appliance.anomaly.records import FlowRecord  # noqa: E402


def make_pcap_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("make_pcap", ROOT / "bench/anomaly/make_pcap.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(label: str, packets: int, work) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    detail = work()
    took = time.perf_counter() - t0
    print(f"{label:<38} {took:7.2f} s  {packets / took:>10,.0f} packets/s  {detail}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--pcap", type=Path, help="an existing capture (default: synthetic)")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic capture")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="eg-pcap-bench-"))
    path = args.pcap
    if path is None:
        path = workdir / "office.pcap"
        t0 = time.perf_counter()
        make_pcap_module().write_pcap(path, args.packets)
        print(
            f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s"
        )
    stats = CaptureStats()
    list(read_capture(path, stats))  # warm the page cache and the imports
    packets = stats.records
    print(f"{packets:,} packets; python {sys.version.split()[0]}")

    from scapy.utils import RawPcapReader

    def framing() -> str:
        with RawPcapReader(str(path)) as reader:
            n = sum(1 for _ in reader)
        return f"{n:,} records"

    def parsing() -> str:
        s = CaptureStats()
        n = sum(1 for _ in read_capture(path, s))
        return f"{n:,} IP packets, {s.truncated} truncated, {s.not_ip} not IP"

    def aggregating() -> str:
        table = FlowTable()
        recs = list(table.records(read_capture(path)))
        n_flows = sum(1 for r in recs if isinstance(r, FlowRecord))
        return f"{n_flows:,} flow + {len(recs) - n_flows:,} DNS records"

    def scoring() -> str:
        from appliance.anomaly.engine import Scorer

        scorer = Scorer()
        alerts = {
            (a.host, a.kind, a.peer) for _, a in scorer.run(FlowTable().records(read_capture(path)))
        }
        return f"{len(alerts)} alerts: {sorted(alerts)}"

    def command() -> str:
        cmd = [sys.executable, "-m", "appliance.cli", "score", "--json", str(path)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        return f"exit {done.returncode}, {len(done.stdout.splitlines())} alert lines"

    timed("1. framing (RawPcapReader)", packets, framing)
    timed("2. + header parsing", packets, parsing)
    timed("3. + flows and DNS (FlowTable)", packets, aggregating)
    timed("4. + scoring (Scorer.run)", packets, scoring)
    timed("5. `edgeguard score` process, end to end", packets, command)
    if args.pcap is None and not args.keep:
        path.unlink()
        workdir.rmdir()


if __name__ == "__main__":
    main()
