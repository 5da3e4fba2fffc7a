"""How much a domain label looks like a real one: a character trigram model of real names.

DGA malware derives its rendezvous names from a seed (a date, a counter), so most of them
are strings no person would register (``xjwqkzpvteud``, ``4f9a0c1e7b``). A trigram model
of registered-domain labels (trained offline from the Majestic Million top list by
``bench/anomaly/train_ngram.py``; attribution in ``data/README``) gives each label a mean
log-probability per character: real names score around -2.3 nats, random letters below -3.
Dictionary-word DGAs (``rightstudy``) score like real names: for them the NXDOMAIN volume
is the evidence, not the name.

The table is shipped packed: one byte per (two-symbol context, next symbol), the negative
log-probability quantised to ``1/scale`` nats. 38 symbols (``a-z``, ``0-9``, ``-`` and one
boundary symbol for start and end) make 38**3 = 54,872 bytes; loading is one file read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from appliance.errors import AnomalyError

MAGIC = "edgeguard-char-trigram"
DEFAULT_MODEL = "domain-trigrams.bin"
ALPHABET = "-0123456789abcdefghijklmnopqrstuvwxyz"
"""Label characters (LDH); symbol 0 is the boundary (start of label, end of label)."""


class NgramModel:
    """A character trigram table over ``ALPHABET`` plus the boundary symbol.

    ``score(label)`` is the mean natural-log probability per symbol (the characters and the
    end of the label), so long and short names compare fairly. A character outside the
    alphabet (``_``, a non-ASCII letter) costs ``unknown_logp``.
    """

    def __init__(
        self,
        table: bytes,
        scale: float,
        alphabet: str = ALPHABET,
        unknown_logp: float = -8.0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.symbols = len(alphabet) + 1
        if len(table) != self.symbols**3:
            raise AnomalyError(
                f"n-gram table has {len(table)} entries, expected {self.symbols**3}:"
                " the model file is truncated or for another alphabet; retrain it"
            )
        self.table = table
        self.scale = scale
        self.alphabet = alphabet
        self.unknown_logp = unknown_logp
        self.meta = dict(meta or {})
        self._index = {ch: i + 1 for i, ch in enumerate(alphabet)}
        self._unknown_cost = -unknown_logp * scale
        self._dash = self._index.get("-", 1)

    @classmethod
    def from_logprobs(
        cls,
        logprobs: Sequence[float],
        scale: float = 16.0,
        alphabet: str = ALPHABET,
        meta: dict[str, Any] | None = None,
    ) -> NgramModel:
        """Quantise a full table of log-probabilities (index ``(a*S + b)*S + c``)."""
        top = 255
        packed = bytes(min(top, max(0, round(-lp * scale))) for lp in logprobs)
        return cls(packed, scale, alphabet, meta=meta)

    @classmethod
    def load(cls, path: Path | None = None) -> NgramModel:
        """Read a model file (default: the one shipped with the package)."""
        try:
            if path is None:
                raw = resources.files("appliance.anomaly").joinpath("data", DEFAULT_MODEL)
                data = raw.read_bytes()
            else:
                data = path.read_bytes()
        except OSError as exc:
            where = path or f"appliance/anomaly/data/{DEFAULT_MODEL}"
            raise AnomalyError(f"cannot read the n-gram model {where}: {exc}") from exc
        end = data.find(b"\n")
        try:
            header = json.loads(data[:end]) if end > 0 else None
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != MAGIC:
            raise AnomalyError(
                f"{path or DEFAULT_MODEL} is not an n-gram model file (no '{MAGIC}' header);"
                " rebuild it with bench/anomaly/train_ngram.py"
            )
        return cls(
            data[end + 1 :],
            float(header["scale"]),
            str(header["alphabet"]),
            float(header.get("unknown_logp", -8.0)),
            meta=header,
        )

    def dump(self, path: Path) -> None:
        """Write the model: a one-line JSON header, then the packed table."""
        header = dict(self.meta)
        header.update(
            format=MAGIC, alphabet=self.alphabet, scale=self.scale, unknown_logp=self.unknown_logp
        )
        text = json.dumps(header, sort_keys=True, separators=(",", ":"))
        path.write_bytes(text.encode() + b"\n" + self.table)

    def logprob(self, context: str, char: str) -> float:
        """log P(char | the two symbols before it); ``^`` marks the start, ``$`` the end
        (``logprob("^g", "o")``, ``logprob("le", "$")``). For tests and inspection."""
        sym = [0 if ch in "^$" else self._index.get(ch, self._dash) for ch in context + char]
        return -self.table[(sym[0] * self.symbols + sym[1]) * self.symbols + sym[2]] / self.scale

    def score(self, label: str) -> float:
        """Mean log-probability per symbol of ``label`` (one DNS label, lower case)."""
        index, table, size = self._index, self.table, self.symbols
        a = b = 0
        cost = 0.0
        for ch in label:
            c = index.get(ch)
            if c is None:
                cost += self._unknown_cost
                c = self._dash
            else:
                cost += table[(a * size + b) * size + c]
            a, b = b, c
        cost += table[(a * size + b) * size]
        return -cost / self.scale / (len(label) + 1)


@lru_cache(maxsize=1)
def default_model() -> NgramModel:
    """The shipped model, loaded once per process (~55 KB, well under a millisecond)."""
    return NgramModel.load()


def uniform_logprob(alphabet: str = ALPHABET) -> float:
    """The score of a name drawn uniformly from the alphabet: the floor a model must beat."""
    return -math.log(len(alphabet) + 1)
