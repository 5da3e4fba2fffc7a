"""Streaming parser for the block/allow lists people subscribe to: hosts files, plain domain
lists, adblock-style DNS filters (AdGuard DNS filter, EasyList network rules), wildcards and
``/regex/`` rules, mixed freely: the format is told per line.

Why a sink instead of a returned list: a 1M-line list must never exist as 1M Python strings
(~100 MB on a 60 MB budget). Accepted names go to the sink in batches (a few thousand names, or
one whole block of the fast path), where ``DomainIndexBuilder`` hashes them and drops them.

Why a fast path: the generic per-line parser costs ~2 µs a line, two seconds for a 1M-line
list, twice the start-up budget. Files are read in 64 KiB blocks; a block in which every line is
a plain, already-normalised name (or ``0.0.0.0 name``, ``127.0.0.1 name``, ``||name^``) is
recognised with a few C-level scans (``bytes.translate``, ``count`` and substring tests) and its
names handed over as ``bytes`` from one ``split()``. Any other block (comments, uppercase, IDN,
options, junk) takes the per-line path.
Both paths accept exactly the same names and count the same lines (tested).

Semantics delivered to the sink: ``block``/``allow`` names mean the name and every subdomain
(``||example.com^``, a hosts entry and a plain entry alike); ``*_suffix`` names (``*.example.com``)
mean strict subdomains only; regexes are searched in the normalised query name. Lines that DNS
cannot express (URL/path rules, cosmetic rules, unsupported ``$`` options) are skipped and
counted with their line number and reason; comments, blank lines and list headers are not.
"""

from __future__ import annotations

import ipaddress
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import BinaryIO, Protocol

from dns_filter.errors import DnsFilterError

__all__ = [
    "MAX_ERRORS",
    "MAX_REGEX_LEN",
    "SKIP_COSMETIC",
    "SKIP_ENCODING",
    "SKIP_IDN",
    "SKIP_INVALID",
    "SKIP_LINE",
    "SKIP_OPTION",
    "SKIP_REGEX",
    "SKIP_REGEX_LONG",
    "SKIP_SINGLE",
    "SKIP_URL",
    "ListCollector",
    "ListError",
    "ListSummary",
    "RuleSink",
    "normalise_name",
    "parse_list",
]

MAX_ERRORS = 100
"""Skipped lines kept with their line number and reason; the counters go on counting."""

MAX_REGEX_LEN = 512
"""Longer ``/regex/`` rules are refused: they are slow to match and usually broken."""

_READ_SIZE = 1 << 16
"""64 KiB (~2,600 lines): a comment only costs its block the fast path, and every transient
buffer stays below glibc's mmap threshold (bigger ones raise it and fragment the heap)."""
_SLOW_BATCH = 4096
_MAX_LINE = 1 << 16

_LABEL_CHARS = b"abcdefghijklmnopqrstuvwxyz0123456789-_"
_NEWLINE_AS_DOT = bytes.maketrans(b"\n", b".")
_HOSTS_CHARS = _LABEL_CHARS + b". \n"
_NAME_RE = re.compile(r"(?:[a-z0-9_-]{1,63}\.)+[a-z0-9_-]{1,63}")
_HOSTS_PREFIXES = (b"0.0.0.0 ", b"127.0.0.1 ")
_HOSTS_BOILERPLATE = frozenset(
    {"localhost", "localhost.localdomain", "local", "broadcasthost", "0.0.0.0"}
)
_COSMETIC_MARKERS = ("##", "#@#", "#?#", "#$#", "#%#", "#@?#", "#@$#", "#@%#")
_IGNORABLE_OPTIONS = frozenset(
    {
        "important",
        "third-party",
        "3p",
        "first-party",
        "1p",
        "~third-party",
        "~first-party",
        "document",
        "doc",
        "all",
        "popup",
    }
)
"""``$`` options that only narrow where a browser applies the rule: DNS blocks the name anyway."""
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}?]\)[+*{]")
_POSIX_CLASSES = {
    "[:alnum:]": "a-zA-Z0-9",
    "[:alpha:]": "a-zA-Z",
    "[:digit:]": "0-9",
    "[:lower:]": "a-z",
    "[:upper:]": "A-Z",
    "[:space:]": "\\s",
    "[:word:]": "\\w",
    "[:xdigit:]": "0-9A-Fa-f",
}
"""RE2 bracket classes (AdGuard's regexes use them): Python would read ``[^.[:space:]]`` as a
different set without complaint, so they are spelled out before compiling."""
_URL_CHARS = frozenset("/^|*:?=&%@,;[]()<>\\\"'")

SKIP_URL = "URL or path rule (not expressible in DNS)"
SKIP_COSMETIC = "cosmetic or HTML rule (not expressible in DNS)"
SKIP_OPTION = "unsupported adblock option"
SKIP_SINGLE = "single-label name would block a whole TLD"
SKIP_INVALID = "invalid name"
SKIP_IDN = "invalid internationalised name"
SKIP_REGEX = "invalid regex"
SKIP_REGEX_LONG = "regex longer than 512 characters"
SKIP_LINE = "unrecognised line"
SKIP_ENCODING = "line is not UTF-8"


class ListError(DnsFilterError):
    """A list could not be read at all (missing or unreadable file)."""


@dataclass(slots=True)
class ListSummary:
    """What parsing one list gave: accepted rules, skipped rules and why.

    ``entries`` counts accepted rules as written (a name listed twice counts twice; the index
    drops the duplicate). ``skipped`` counts refused rules (a hosts line with three bad names
    counts three). ``errors`` keeps the first ``MAX_ERRORS`` as ``(line_no, reason)``;
    ``reasons`` counts every skip by reason. ``format`` is ``hosts``, ``domains``, ``adblock``,
    ``mixed`` (lines of several formats) or ``empty``. ``max_labels`` is the most labels of an
    accepted name: the matcher never looks up longer parents (an ip6.arpa name has 34 labels).
    """

    format: str = "empty"
    lines: int = 0
    entries: int = 0
    skipped: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    max_labels: int = 0

    def __str__(self) -> str:
        """One line for logs: the counts and the skip reasons, not the 100 error lines."""
        text = f"{self.format}, {self.lines} lines, {self.entries} entries, {self.skipped} skipped"
        if self.reasons:
            text += " (" + ", ".join(f"{n} {reason}" for reason, n in self.reasons.items()) + ")"
        return text


class RuleSink(Protocol):
    """Receives the rules of a list in batches. Names are ASCII, lowercase, punycode.

    A batch (``str`` from the per-line path, ``bytes`` from the fast path) is reused once the
    call returns: copy what you keep.
    """

    def block(self, names: Sequence[str | bytes]) -> None:
        """Block these names and all their subdomains."""

    def allow(self, names: Sequence[str | bytes]) -> None:
        """Allow these names and all their subdomains (beats any block)."""

    def block_suffix(self, names: Sequence[str | bytes]) -> None:
        """Block strict subdomains of these names (``*.name``), not the names themselves."""

    def allow_suffix(self, names: Sequence[str | bytes]) -> None:
        """Allow strict subdomains of these names."""

    def regex_block(self, pattern: str) -> None:
        """Block names in which ``pattern`` (already validated) is found."""

    def regex_allow(self, pattern: str) -> None:
        """Allow names in which ``pattern`` is found."""


@dataclass(slots=True)
class ListCollector:
    """A ``RuleSink`` that keeps everything as ``str``: for tests and small lists only."""

    blocked: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)
    blocked_suffixes: list[str] = field(default_factory=list)
    allowed_suffixes: list[str] = field(default_factory=list)
    block_regexes: list[str] = field(default_factory=list)
    allow_regexes: list[str] = field(default_factory=list)

    def block(self, names: Sequence[str | bytes]) -> None:
        self.blocked.extend(map(_text, names))

    def allow(self, names: Sequence[str | bytes]) -> None:
        self.allowed.extend(map(_text, names))

    def block_suffix(self, names: Sequence[str | bytes]) -> None:
        self.blocked_suffixes.extend(map(_text, names))

    def allow_suffix(self, names: Sequence[str | bytes]) -> None:
        self.allowed_suffixes.extend(map(_text, names))

    def regex_block(self, pattern: str) -> None:
        self.block_regexes.append(pattern)

    def regex_allow(self, pattern: str) -> None:
        self.allow_regexes.append(pattern)


def _text(name: str | bytes) -> str:
    return name if isinstance(name, str) else name.decode("ascii")


def normalise_name(raw: str) -> tuple[str, str]:
    """``(name, "")`` for an acceptable list entry, else ``("", reason)``.

    Lowercases, drops one trailing dot, converts IDN to punycode (IDNA 2003, the stdlib codec)
    and checks the shape: labels of 1..63 of ``[a-z0-9_-]`` (underscores occur in real lists),
    253 characters at most, at least two labels.
    """
    name = raw.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except (UnicodeError, ValueError):
            return "", SKIP_IDN
    if "." not in name:
        return ("", SKIP_SINGLE) if name and _NAME_RE.fullmatch(name + ".x") else ("", SKIP_INVALID)
    if len(name) > 253 or not _NAME_RE.fullmatch(name):
        return "", SKIP_INVALID
    return name, ""


def parse_list(
    source: str | os.PathLike[str] | Iterable[str] | Iterable[bytes], sink: RuleSink
) -> ListSummary:
    """Parse one list into ``sink`` and return its summary. Never raises on content.

    ``source`` is a path (a ``str`` is always a path; use the fast path for big lists) or an
    iterable of lines (``str`` or ``bytes``, with or without line ends). Raises ``ListError``
    only when the file cannot be opened or read.
    """
    parser = _Parser(sink)
    if isinstance(source, str | os.PathLike):
        try:
            with open(source, "rb") as f:
                parser.feed_file(f)
        except OSError as e:
            raise ListError(f"cannot read list {os.fspath(source)!r}: {e.strerror or e}") from e
    else:
        for line in source:
            parser.feed_line(line)
    return parser.finish()


class _Parser:
    """Per-list state: counters, batches for the sink, the adblock hint, the line number."""

    def __init__(self, sink: RuleSink) -> None:
        self.sink = sink
        self.summary = ListSummary()
        self.line_no = 0
        self.adblock = False  # set by adblock headers/rules: "##..." is then cosmetic
        self.formats: set[str] = set()
        self.batches: tuple[list[str], list[str], list[str], list[str]] = ([], [], [], [])
        self.pending = 0
        self.ip_cache: dict[str, bool] = {}

    # -- input ------------------------------------------------------------------------------

    def feed_file(self, f: BinaryIO) -> None:
        """Read ``f`` in blocks that end on a line boundary; the last line may lack one."""
        carry = b""
        first = True
        while chunk := f.read(_READ_SIZE):
            if first:
                first = False
                chunk = chunk.removeprefix(b"\xef\xbb\xbf")
            data = carry + chunk if carry else chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0 and len(data) > _MAX_LINE:
                data += b"\n"  # a newline-less monster: parse it as one (junk) line
                cut = len(data)
            carry = data[cut:]
            if cut:
                self.feed_block(data[:cut] if cut < len(data) else data)
        if carry:
            self.feed_block(carry + b"\n")

    def feed_block(self, block: bytes) -> None:
        """Whole lines: the fast path if the block qualifies, else line by line."""
        if not self.fast_block(block):
            self.slow_block(block)

    def fast_block(self, block: bytes) -> bool:
        """Accept ``block`` (whole lines) if every line is a valid normalised name, alone or
        after ``0.0.0.0 ``/``127.0.0.1 ``; otherwise change nothing and return False."""
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")  # a lone CR is left for the checks below
        names: list[bytes] | None = None
        fmt = "domains"
        if block.startswith(_HOSTS_PREFIXES):
            fmt = "hosts"
            # Every line "IP name": each starts with the prefix, none ends in a space (so each
            # has a second token), only label characters, dots, spaces and newlines occur, and
            # there are two tokens per line in all (so no line has a third).
            prefix = block[: block.index(b" ") + 1]
            count = block.count(b"\n")
            if block.count(b"\n" + prefix) != count - 1 or b" \n" in block:
                return False
            if block.translate(None, _HOSTS_CHARS):
                return False
            tokens = block.split()
            if len(tokens) != 2 * count:
                return False
            names = tokens[1::2]
            if b"0.0.0.0" in names or b"localhost.localdomain" in names:
                return False  # boilerplate entries: the per-line path leaves them out
            names_blk = b"\n".join(names) + b"\n"
            if names_blk.startswith(b"ip6-") or b"\nip6-" in names_blk:
                return False
        elif block.startswith(b"||"):
            # Every line "||name^": each starts with "||" and ends with "^", and holds no other
            # "|" or "^" (so no "$options", "|" anchors or paths survive the checks below).
            count = block.count(b"\n")
            if block.count(b"\n||") != count - 1 or block.count(b"^\n") != count:
                return False
            names_blk = block.translate(None, b"|^")
            if len(block) - len(names_blk) != 3 * count:
                return False  # more "|" or "^" than the anchors: options, paths, "|" ends
            fmt = "adblock"
        else:
            names_blk = block
        # What is left after deleting label characters: dots, newlines and anything invalid.
        skeleton = names_blk.translate(None, _LABEL_CHARS)
        if skeleton.translate(None, b".\n") or skeleton[:1] == b"\n" or b"\n\n" in skeleton:
            return False  # an invalid character, or a line without a dot
        # With newlines read as dots, an empty label, a leading or trailing dot (valid, but the
        # slow path strips it) and an empty line all show up as "..": one scan for all four.
        if names_blk[:1] == b"." or b".." in names_blk.translate(_NEWLINE_AS_DOT):
            return False
        if names is None:
            names = names_blk.split()
        if max(map(len, names)) > 63:
            for name in compress(names, map(int.__lt__, repeat(63), map(len, names))):
                if len(name) > 253 or max(map(len, name.split(b"."))) > 63:
                    return False
        self.sink.block(names)
        self.summary.entries += len(names)
        self.summary.lines += len(names)
        self.line_no += len(names)
        self.formats.add(fmt)
        # The skeleton holds each name's dots between newlines: its longest run of dots is
        # the most labels of a name in this block (checked one more at a time, ~8 KiB scans).
        summary = self.summary
        while b"." * summary.max_labels in skeleton:
            summary.max_labels += 1
        if fmt == "adblock":
            self.adblock = True
        return True

    def slow_block(self, block: bytes) -> None:
        """Per-line parsing of whole lines."""
        lines = block.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        for raw in lines:
            self.feed_line(raw)
        self.flush()

    def feed_line(self, raw: str | bytes) -> None:
        """Parse one line (counted even when it is junk)."""
        self.line_no += 1
        self.summary.lines += 1
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.skip(SKIP_ENCODING)
                return
        else:
            line = raw
        if self.line_no == 1:
            line = line.lstrip("\ufeff")
        self.line(line.strip())
        if self.pending >= _SLOW_BATCH:
            self.flush()

    def finish(self) -> ListSummary:
        """Flush the batches and settle the format."""
        self.flush()
        if len(self.formats) == 1:
            self.summary.format = next(iter(self.formats))
        elif self.formats:
            self.summary.format = "mixed"
        return self.summary

    # -- one line ---------------------------------------------------------------------------

    def line(self, s: str) -> None:
        """A stripped line: comments and headers first, since they must not count as skips."""
        if not s or s[0] == "!":
            if s:
                self.adblock = True
            return
        head = s[0]
        if head == "[":
            low = s.lower()
            if s.endswith("]") and ("adblock" in low or "adguard" in low or "ublock" in low):
                self.adblock = True
            else:
                self.skip(SKIP_LINE, s)
            return
        if head == "#":
            if self.adblock and s.startswith(_COSMETIC_MARKERS):
                self.skip(SKIP_COSMETIC, s)
            return  # a comment
        if s.startswith("@@"):
            self.adblock = True
            self.rule(s[2:], allow=True, original=s)
        else:
            self.rule(s, allow=False, original=s)

    def rule(self, s: str, *, allow: bool, original: str) -> None:
        """One rule (``@@`` already removed): tells adblock, regex, hosts and plain apart."""
        if s.startswith("||"):
            self.adblock = True
            self.adblock_rule(s[2:], allow=allow, original=original)
            return
        if s.startswith("|"):
            self.skip(SKIP_URL, original)
            return
        if s.startswith("/"):
            self.regex_rule(s, allow=allow, original=original)
            return
        hashpos = s.find("#")
        if hashpos > 0:
            if not s[hashpos - 1].isspace() and s.startswith(_COSMETIC_MARKERS, hashpos):
                self.skip(SKIP_COSMETIC, original)
                return
            s = s[:hashpos].rstrip()  # an inline comment
        if "$$" in s or "$@$" in s:
            self.skip(SKIP_COSMETIC, original)
            return
        tokens = s.split()
        if not tokens:
            return
        if len(tokens) > 1 and self.is_ip(tokens[0]):
            if allow:
                self.skip(SKIP_LINE, original)
                return
            self.formats.add("hosts")
            for tok in tokens[1:]:
                if tok in _HOSTS_BOILERPLATE or tok.startswith("ip6-"):
                    continue
                self.name(tok, allow=False, suffix=False)
            return
        if len(tokens) > 1:
            self.skip(SKIP_LINE, original)
            return
        tok = tokens[0]
        self.formats.add("adblock" if allow or self.adblock else "domains")
        if tok.startswith("*."):
            tok = tok[2:]
            if "*" in tok:
                self.skip(SKIP_URL, original)
            else:
                self.name(tok, allow=allow, suffix=True)
        elif _URL_CHARS.isdisjoint(tok) and "$" not in tok:
            self.name(tok, allow=allow, suffix=False)
        else:
            self.skip(SKIP_URL, original)

    def adblock_rule(self, body: str, *, allow: bool, original: str) -> None:
        """``||body``: only a bare host (with ``^``, ``|`` or ignorable options) is DNS."""
        self.formats.add("adblock")
        if "$$" in body or "$@$" in body or "#" in body:
            self.skip(SKIP_COSMETIC, original)
            return
        body, _, options = body.partition("$")
        if options and not self.options_ok(options, original):
            return
        body = body.removesuffix("|").removesuffix("^")
        suffix = body.startswith("*.")
        if suffix:
            body = body[2:]
        if not _URL_CHARS.isdisjoint(body):
            self.skip(SKIP_URL, original)
            return
        self.name(body, allow=allow, suffix=suffix)

    def options_ok(self, options: str, original: str) -> bool:
        """True if every ``$`` option only narrows the rule in a browser; else skip it."""
        for option in options.split(","):
            if option.strip().lower() not in _IGNORABLE_OPTIONS:
                self.skip(SKIP_OPTION, original)
                return False
        return True

    def regex_rule(self, s: str, *, allow: bool, original: str) -> None:
        """``/pattern/`` or ``/pattern/$options``; anything else starting with / is a path."""
        end = s.rfind("/")
        tail = s[end + 1 :]
        if end <= 0 or (tail and not tail.startswith("$")):
            self.skip(SKIP_URL, original)
            return
        if tail and not self.options_ok(tail[1:], original):
            return
        pattern = s[1:end]
        self.formats.add("adblock")
        if len(pattern) > MAX_REGEX_LEN:
            self.skip(SKIP_REGEX_LONG, original)
            return
        for posix, python in _POSIX_CLASSES.items():
            if posix in pattern:
                pattern = pattern.replace(posix, python)
        problem = _regex_problem(pattern)
        if problem is not None:
            self.skip(SKIP_REGEX, f"{original}: {problem}")
            return
        if allow:
            self.sink.regex_allow(pattern)
        else:
            self.sink.regex_block(pattern)
        self.summary.entries += 1

    def name(self, raw: str, *, allow: bool, suffix: bool) -> None:
        """Normalise and batch one name, or count why it was refused."""
        name, problem = normalise_name(raw)
        if problem:
            self.skip(problem, raw)
            return
        self.batches[allow + 2 * suffix].append(name)
        self.summary.entries += 1
        self.pending += 1
        labels = name.count(".") + 1
        if labels > self.summary.max_labels:
            self.summary.max_labels = labels

    # -- helpers ----------------------------------------------------------------------------

    def is_ip(self, tok: str) -> bool:
        """True for IPv4/IPv6 literals (hosts-file addresses), memoised per list."""
        known = self.ip_cache.get(tok)
        if known is not None:
            return known
        result = False
        if ":" in tok or tok.replace(".", "").isdigit():
            try:
                ipaddress.ip_address(tok)
                result = True
            except ValueError:
                result = False
        if len(self.ip_cache) < 1024:
            self.ip_cache[tok] = result
        return result

    def skip(self, reason: str, detail: str = "") -> None:
        """Count a refused rule; keep its line number and reason among the first 100."""
        summary = self.summary
        summary.skipped += 1
        summary.reasons[reason] = summary.reasons.get(reason, 0) + 1
        if len(summary.errors) < MAX_ERRORS:
            text = f"{reason}: {detail[:120]}" if detail else reason
            summary.errors.append((self.line_no, text))

    def flush(self) -> None:
        """Hand the batches to the sink (bounded memory on the per-line path)."""
        block, allow, block_sfx, allow_sfx = self.batches
        if block:
            self.sink.block(block)
            block.clear()
        if allow:
            self.sink.allow(allow)
            allow.clear()
        if block_sfx:
            self.sink.block_suffix(block_sfx)
            block_sfx.clear()
        if allow_sfx:
            self.sink.allow_suffix(allow_sfx)
            allow_sfx.clear()
        self.pending = 0


def _regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be used, or None. Warnings (e.g. nested sets) count as errors.

    A quantified group that ends in a quantifier (``(a+)+``, ``(\\w+\\s?)*``) is refused:
    Python's backtracking engine can take exponential time on it, and a list must not be able
    to stall the resolver. ``([^.]+\\.)+`` passes: each round needs its dot. A heuristic for
    the classic shapes, not a proof.
    """
    if _NESTED_QUANTIFIER.search(pattern):
        return "nested quantifier (catastrophic backtracking risk)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            re.compile(pattern)
    except (re.error, RecursionError, OverflowError, ValueError, Warning) as e:
        return str(e) or type(e).__name__
    return None
