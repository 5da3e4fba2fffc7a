"""The shipped character trigram model: format, speed, and how well it separates.

Held-out real names are the labels of ``bench/anomaly/data/majestic-top.txt`` with
``crc32(label) % 10 == 0``: the rule ``bench/anomaly/train_ngram.py`` uses to keep them out
of training (checked here against the count the model file records).
"""

from __future__ import annotations

import math
import random
import time
import zlib
from pathlib import Path

import pytest

from appliance.anomaly import ngram
from appliance.anomaly.detector import Context
from appliance.anomaly.dga import DgaDetector
from appliance.anomaly.domains import is_internet_name, split_name
from appliance.errors import AnomalyError

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "bench" / "anomaly" / "data"


def _lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip().lower() for ln in text if ln.strip() and not ln.startswith("#")]


def _labels() -> tuple[list[str], list[str]]:
    """(training labels, held-out labels), the way the training script cuts them."""
    seen: dict[str, None] = {}
    for domain in _lines(DATA / "majestic-top.txt"):
        split = split_name(domain)
        label = split.label
        ldh = set(label) <= set(ngram.ALPHABET)
        if is_internet_name(split) and ldh and not label.startswith("xn--"):
            seen.setdefault(label, None)
    held = [label for label in seen if zlib.crc32(label.encode()) % 10 == 0]
    return [label for label in seen if zlib.crc32(label.encode()) % 10 != 0], held


def _auc(real: list[float], fake: list[float]) -> float:
    """P(real > fake), ties counted half; quadratic, fine for a few thousand pairs."""
    wins = sum((r > f) + 0.5 * (r == f) for r in real for f in fake)
    return wins / (len(real) * len(fake))


@pytest.fixture(scope="module")
def model() -> ngram.NgramModel:
    return ngram.NgramModel.load()


@pytest.fixture(scope="module")
def families() -> dict[str, list[str]]:
    rng = random.Random(11)
    letters, hexdigits = "abcdefghijklmnopqrstuvwxyz", "0123456789abcdef"
    words = _lines(DATA / "dictionary-words.txt")

    def rand(chars: str, low: int, high: int) -> str:
        return "".join(rng.choice(chars) for _ in range(rng.randint(low, high)))

    return {
        "letters": [rand(letters, 8, 16) for _ in range(400)],
        "hex": [rand(hexdigits, 8, 32) for _ in range(400)],
        "alnum": [rand(letters + "0123456789", 8, 16) for _ in range(400)],
        "words": [rng.choice(words) + rng.choice(words) for _ in range(400)],
    }


def test_the_model_file_records_a_training_set_without_the_held_out_names(
    model: ngram.NgramModel,
) -> None:
    training, held = _labels()
    assert len(held) >= 100
    assert model.meta["labels"] == len(training)
    assert model.meta["holdout"] == "crc32(label) % 10 == 0"
    assert "CC BY 3.0" in model.meta["source"]


def test_loading_is_fast_and_small() -> None:
    path = Path(ngram.__file__).parent / "data" / ngram.DEFAULT_MODEL
    best = min(_timed(lambda: ngram.NgramModel.load(path)) for _ in range(5))
    assert best < 0.05
    assert path.stat().st_size < 100_000


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def test_each_context_is_a_probability_distribution(model: ngram.NgramModel) -> None:
    symbols = [*ngram.ALPHABET, "$"]
    for context in ("^^", "^g", "oo", "le", "q-", "9z"):
        total = sum(math.exp(model.logprob(context, ch)) for ch in symbols)
        assert total == pytest.approx(1.0, abs=0.06), context
    assert model.logprob("^^", "$") < model.logprob("^^", "s")  # empty labels are rare
    assert model.logprob("oo", "g") > model.logprob("oo", "q")


def test_real_held_out_names_outscore_random_letters_hex_and_digits(
    model: ngram.NgramModel, families: dict[str, list[str]]
) -> None:
    _, held = _labels()
    real = [model.score(label) for label in held]
    assert _auc(real, [model.score(n) for n in families["letters"]]) > 0.95
    assert _auc(real, [model.score(n) for n in families["hex"]]) > 0.98
    assert _auc(real, [model.score(n) for n in families["alnum"]]) > 0.97


def test_dictionary_dgas_read_like_real_names_but_above_random_letters(
    model: ngram.NgramModel, families: dict[str, list[str]]
) -> None:
    words = sorted(model.score(n) for n in families["words"])
    letters = sorted(model.score(n) for n in families["letters"])
    assert words[len(words) // 2] > letters[len(letters) // 2] + 0.5


def test_the_dga_detector_thresholds_fit_the_shipped_model(
    model: ngram.NgramModel, families: dict[str, list[str]]
) -> None:
    """``low_likelihood`` flags most random names and few real ones."""
    detector = DgaDetector(Context(), model=model)
    _, held = _labels()
    real_flagged = sum(model.score(label) < detector.low_likelihood for label in held) / len(held)
    random_flagged = sum(
        model.score(n) < detector.low_likelihood for n in families["letters"]
    ) / len(families["letters"])
    assert real_flagged < 0.10
    assert random_flagged > 0.80


def test_unknown_characters_cost_more_than_known_ones(model: ngram.NgramModel) -> None:
    assert model.score("mail_server") < model.score("mailserver") - 0.3
    assert model.score("") == pytest.approx(model.logprob("^^", "$"))


def test_dump_and_load_round_trip(tmp_path: Path, model: ngram.NgramModel) -> None:
    path = tmp_path / "m.bin"
    model.dump(path)
    again = ngram.NgramModel.load(path)
    assert again.table == model.table
    assert again.score("example") == model.score("example")
    assert again.meta["labels"] == model.meta["labels"]


def test_quantising_a_uniform_table() -> None:
    size = len(ngram.ALPHABET) + 1
    uniform = ngram.uniform_logprob()
    flat = ngram.NgramModel.from_logprobs([uniform] * size**3)
    assert flat.score("anything") == pytest.approx(uniform, abs=1 / 32)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"no header at all", "not an n-gram model"),
        (b'{"format": "other"}\n' + bytes(10), "not an n-gram model"),
        (
            b'{"format": "edgeguard-char-trigram", "scale": 16, "alphabet": "ab"}\n' + bytes(5),
            "truncated",
        ),
    ],
)
def test_a_broken_model_file_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(content)
    with pytest.raises(AnomalyError, match=message):
        ngram.NgramModel.load(path)


def test_a_missing_model_file_is_an_anomaly_error(tmp_path: Path) -> None:
    with pytest.raises(AnomalyError, match="cannot read"):
        ngram.NgramModel.load(tmp_path / "absent.bin")
