"""Train the DGA detector's character trigram model of real domain labels, and measure it.

    .venv/bin/python bench/anomaly/train_ngram.py            # writes the shipped model
    .venv/bin/python bench/anomaly/train_ngram.py --report   # also: how well it separates

Input: ``bench/anomaly/data/majestic-top.txt`` (the Majestic Million domain column, CC BY
3.0; see its header). Each domain is cut to its registered-domain label (``www.bbc.co.uk``
-> ``bbc``, ``appliance.anomaly.domains``), labels are deduplicated, punycode (``xn--``)
and non-LDH labels are dropped, and one label in ten is held out for the separation test
(``crc32(label) % 10 == 0``; ``tests/appliance/anomaly/test_ngram.py`` uses the same rule, so
the test names were never trained on).

Smoothing: Witten-Bell interpolation, trigram -> bigram -> add-one unigram. It needs no
tuned constant and gives an unseen trigram after a well-attested context little mass (that
context's continuations are well known) and after a rare one a lot (it was sparse).

The report scores held-out real labels against generated DGA-like labels (random letters,
random hex, random letters+digits, dictionary-word pairs like suppobox) and prints the AUC
(probability that a real name outscores a DGA name) and the share of each family below the
thresholds that flag 1% and 5% of the real names.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from appliance.anomaly.domains import is_internet_name, split_name  # noqa: E402
from appliance.anomaly.ngram import ALPHABET, DEFAULT_MODEL, NgramModel  # noqa: E402

INPUT = ROOT / "bench" / "anomaly" / "data" / "majestic-top.txt"
OUTPUT = ROOT / "appliance" / "anomaly" / "data" / DEFAULT_MODEL
ALLOWED = frozenset(ALPHABET)

WORDS_FILE = ROOT / "bench" / "anomaly" / "data" / "dictionary-words.txt"


def read_domains(path: Path) -> list[str]:
    """The domain lines of the list, in rank order (comments and blanks skipped)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip().lower() for ln in lines if ln.strip() and not ln.startswith("#")]


def unique_labels(domains: Iterable[str]) -> list[str]:
    """Registered-domain labels, first occurrence order, LDH only, no punycode."""
    seen: dict[str, None] = {}
    for domain in domains:
        split = split_name(domain)
        label = split.label
        if not is_internet_name(split) or label.startswith("xn--"):
            continue
        if set(label) <= ALLOWED:
            seen.setdefault(label, None)
    return list(seen)


def is_holdout(label: str) -> bool:
    """One label in ten, chosen by a stable hash: never trained on, used for the test."""
    return zlib.crc32(label.encode()) % 10 == 0


def train(labels: Sequence[str], alphabet: str = ALPHABET) -> list[float]:
    """Witten-Bell interpolated trigram log-probabilities, full table ``(a*S + b)*S + c``."""
    import math

    size = len(alphabet) + 1
    index = {ch: i + 1 for i, ch in enumerate(alphabet)}
    uni: Counter[int] = Counter()
    bi: Counter[tuple[int, int]] = Counter()
    tri: Counter[tuple[int, int, int]] = Counter()
    for label in labels:
        seq = [0, 0, *(index[ch] for ch in label), 0]
        for i in range(2, len(seq)):
            a, b, c = seq[i - 2], seq[i - 1], seq[i]
            uni[c] += 1
            bi[b, c] += 1
            tri[a, b, c] += 1
    total = sum(uni.values())
    p1 = [(uni[c] + 1) / (total + size) for c in range(size)]
    bi_count: Counter[int] = Counter()
    bi_types: Counter[int] = Counter()
    for (b, _c), n in bi.items():
        bi_count[b] += n
        bi_types[b] += 1
    p2 = [[0.0] * size for _ in range(size)]
    for b in range(size):
        n, t = bi_count[b], bi_types[b]
        for c in range(size):
            p2[b][c] = (bi[b, c] + t * p1[c]) / (n + t) if n else p1[c]
    tri_count: Counter[tuple[int, int]] = Counter()
    tri_types: Counter[tuple[int, int]] = Counter()
    for (a, b, _c), n in tri.items():
        tri_count[a, b] += n
        tri_types[a, b] += 1
    table: list[float] = []
    for a in range(size):
        for b in range(size):
            n, t = tri_count[a, b], tri_types[a, b]
            for c in range(size):
                p = (tri[a, b, c] + t * p2[b][c]) / (n + t) if n else p2[b][c]
                table.append(math.log(p))
    return table


def dga_families(count: int, seed: int = 7) -> dict[str, list[str]]:
    """Generated DGA-like labels, ``count`` of each family, reproducible from ``seed``."""
    rng = random.Random(seed)
    words = read_domains(WORDS_FILE)
    letters, hexdigits = "abcdefghijklmnopqrstuvwxyz", "0123456789abcdef"
    alnum = letters + "0123456789"

    def rand(chars: str, low: int, high: int) -> str:
        return "".join(rng.choice(chars) for _ in range(rng.randint(low, high)))

    return {
        "random letters (8-16)": [rand(letters, 8, 16) for _ in range(count)],
        "random letters (5-7)": [rand(letters, 5, 7) for _ in range(count)],
        "random hex (8-32)": [rand(hexdigits, 8, 32) for _ in range(count)],
        "random letters+digits (8-16)": [rand(alnum, 8, 16) for _ in range(count)],
        "dictionary pairs": [rng.choice(words) + rng.choice(words) for _ in range(count)],
    }


def auc(real: Sequence[float], fake: Sequence[float]) -> float:
    """P(a real label scores higher than a fake one), ties half (Mann-Whitney U)."""
    ranked = sorted([(s, 1) for s in real] + [(s, 0) for s in fake])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mid = (i + j + 1) / 2  # 1-based mean rank of the tie group
        rank_sum += mid * sum(1 for k in range(i, j) if ranked[k][1])
        i = j
    n_real, n_fake = len(real), len(fake)
    return (rank_sum - n_real * (n_real + 1) / 2) / (n_real * n_fake)


def report(model: NgramModel, holdout: Sequence[str], out: list[str]) -> None:
    real = sorted(model.score(label) for label in holdout)
    thresholds = {f: real[int(len(real) * f)] for f in (0.01, 0.05)}
    out.append(f"held-out real labels: {len(real)}, median score {real[len(real) // 2]:.3f}")
    for fpr, thr in thresholds.items():
        out.append(f"threshold flagging {fpr:.0%} of real labels: {thr:.3f} nats/symbol")
    for family, names in dga_families(2000).items():
        scores = [model.score(name) for name in names]
        rates = ", ".join(
            f"{sum(s < thr for s in scores) / len(scores):.1%} below the {fpr:.0%} threshold"
            for fpr, thr in thresholds.items()
        )
        out.append(f"{family}: AUC {auc(real, scores):.3f}; {rates}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=Path, default=INPUT)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--report", action="store_true", help="measure the separation")
    args = parser.parse_args(argv)
    labels = unique_labels(read_domains(args.input))
    training = [label for label in labels if not is_holdout(label)]
    holdout = [label for label in labels if is_holdout(label)]
    started = time.perf_counter()
    logprobs = train(training)
    meta = {
        "source": "Majestic Million (CC BY 3.0, https://majestic.com/reports/majestic-million)",
        "domains": len(read_domains(args.input)),
        "labels": len(training),
        "holdout": "crc32(label) % 10 == 0",
        "smoothing": "Witten-Bell interpolated trigram/bigram/add-one unigram",
    }
    model = NgramModel.from_logprobs(logprobs, meta=meta)
    model.dump(args.output)
    took = time.perf_counter() - started
    lines = [
        f"trained on {len(training)} labels ({len(holdout)} held out) in {took:.1f} s;"
        f" wrote {args.output} ({args.output.stat().st_size} bytes)"
    ]
    if args.report:
        report(NgramModel.load(args.output), holdout, lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
