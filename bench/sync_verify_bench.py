"""Benchmark: bundle verification + validation on the appliance (issue #8).

Target: under 200 ms for a policy with 1,000 rules and a 100,000-entry list reference.

The policy comes from ``compile_bench.write_policy`` (1,000 rules; its two IP block-list
feeds hold 100,000 CIDRs together). It is assembled and signed as ``edgeguard msp sign``
does (which also publishes each feed's parsed form, ``policies.feed_blob``), then each run
times what the agent does once the bytes are downloaded:

* ``verify``: ``json.loads`` of the envelope + ``verify_bundle`` (shape, Ed25519, version,
  expiry);
* ``blobs``: ``check_blob`` (length + SHA-256) of the policy text, every list file and
  every parsed form;
* ``decode``: ``decode_feed`` of the parsed forms (with the check that they are merged);
* ``validate``: ``parse_policy`` of the policy with its files materialised in a directory
  (the agent's staging dir), its feeds read from the decoded forms as the agent does.

``total`` is verify + blobs + decode + validate. Writing the files to disk
(``materialise``) is reported apart; it is not verification. For comparison,
``text-parse`` is ``validate`` when the agent parses the feed text itself (bundles signed
before parsed forms existed, or a local feed): the old path.

    .venv/bin/python bench/sync_verify_bench.py [--rules 1000] [--cidrs 100000] [--runs 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compile_bench import write_policy

from appliance.sync.bundle import assemble_policy
from appliance.sync.keys import generate_key
from appliance.sync.metadata import check_blob, load_root, make_bundle, make_root, verify_bundle
from policies.feed_blob import decode_feed
from policies.feeds import FeedData
from policies.loader import parse_policy

TARGET_S = 0.200


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--cidrs", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    now = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="sync-bench-") as tmp:
        policy_path = write_policy(Path(tmp), args.rules, args.cidrs)
        t0 = time.perf_counter()
        assembled = assemble_policy(policy_path)
        t1 = time.perf_counter()
        root_key, bundle_key = generate_key(), generate_key()
        root = load_root(
            make_root(1, [root_key, bundle_key], [root_key], [bundle_key], [],
                      now + dt.timedelta(days=365), [root_key])
        )  # fmt: skip
        envelope, blobs = make_bundle(
            "bench", 2, assembled.text, assembled.files, ["rules"],
            now + dt.timedelta(days=30), bundle_key, parsed=assembled.parsed, created=now,
        )  # fmt: skip
        t2 = time.perf_counter()
        wire = json.dumps(envelope).encode()
        entries = sum(
            1 for data in assembled.files.values() for line in data.splitlines()
            if line.strip() and not line.startswith(b"#")
        )  # fmt: skip
        print(
            f"policy: {args.rules} rules, {len(assembled.text) / 1e3:.0f} kB; "
            f"{len(assembled.files)} list files, {entries} entries, "
            f"{sum(map(len, assembled.files.values())) / 1e6:.1f} MB; envelope {len(wire)} B"
        )
        print(f"msp side: assemble+validate {t1 - t0:.3f} s, sign {t2 - t1:.4f} s")
        names = ("verify", "blobs", "decode", "validate", "total", "materialise", "text-parse")
        rows: dict[str, list[float]] = {k: [] for k in names}
        for run in range(args.runs):
            site = Path(tmp) / f"site-{run}"
            gc.collect()
            a = time.perf_counter()
            meta = verify_bundle(root, json.loads(wire), site="bench", last_version=1, now=now)
            b = time.perf_counter()
            text = blobs[meta.policy_sha256]
            check_blob(meta.policy_sha256, meta.policy_length, text, "policy")
            for rel, (digest, length) in meta.files.items():
                check_blob(digest, length, blobs[digest], rel)
            for rel, (digest, length) in meta.parsed.items():
                check_blob(digest, length, blobs[digest], rel)
            c = time.perf_counter()
            feeds = {rel: decode_feed(blobs[digest]) for rel, (digest, _) in meta.parsed.items()}
            d = time.perf_counter()
            for rel, (digest, _) in meta.files.items():
                (site / rel).parent.mkdir(parents=True, exist_ok=True)
                (site / rel).write_bytes(blobs[digest])
            e = time.perf_counter()

            def read_feed(
                path: Path, site: Path = site, feeds: dict[str, FeedData] = feeds
            ) -> FeedData:
                return feeds[path.relative_to(site).as_posix()]

            loaded = parse_policy(text.decode(), "bundle", base_dir=site, read_feed=read_feed)
            f = time.perf_counter()
            assert len(loaded.policy.rules) == args.rules
            del loaded
            gc.collect()
            g = time.perf_counter()
            parse_policy(text.decode(), "bundle", base_dir=site)
            h = time.perf_counter()
            total = (b - a) + (c - b) + (d - c) + (f - e)
            figures = (b - a, c - b, d - c, f - e, total, e - d, h - g)
            for key, value in zip(names, figures, strict=True):
                rows[key].append(value)
    print(f"appliance side, {args.runs} runs (min / median / max, ms):")
    for key, values in rows.items():
        low, mid, high = min(values), statistics.median(values), max(values)
        print(f"  {key:<12} {low * 1e3:8.1f} {mid * 1e3:8.1f} {high * 1e3:8.1f}")
    total = statistics.median(rows["total"])
    verdict = "meets" if total < TARGET_S else "MISSES"
    print(f"verify + blobs + decode + validate: {total * 1e3:.0f} ms median; {verdict} the "
          f"{TARGET_S * 1e3:.0f} ms target")  # fmt: skip
    return 0 if total < TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
