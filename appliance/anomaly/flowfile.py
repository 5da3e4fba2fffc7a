"""Flow files: records as JSON lines, one per line, so flows can be kept, shared and rescored.

``{"type": "flow", "start": ..., "end": ..., "proto": 6, "src": ..., ...}`` carries the
``FlowRecord`` fields by name, ``{"type": "dns", "ts": ..., "client": ..., ...}`` the
``DnsRecord`` ones. JSON lines rather than CSV because the two record types share one file
in time order and a line can be read (and written by other tools) without a schema; the
field names are the records' own, so nothing translates between them.

Reading is strict about what it scores (a wrong type or a missing field is an error naming
the file and line: a silently skipped line would be a silently missed alert), lenient about
the rest: blank lines and ``#`` comment lines are skipped, unknown keys are ignored (a newer
writer may add some), ``state`` and ``answers`` may be left out.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, get_args

from appliance.anomaly.records import DnsRecord, FlowRecord, FlowState
from appliance.errors import AnomalyError

FLOW_STATES = frozenset(get_args(FlowState))
_FLOW_TIMES = ("start", "end")
_FLOW_INTS = ("proto", "sport", "dport", "bytes_out", "bytes_in", "pkts_out", "pkts_in")
_FLOW_STRS = ("src", "dst")


def record_to_json(rec: FlowRecord | DnsRecord) -> str:
    """One line (without the newline) for a record."""
    if isinstance(rec, FlowRecord):
        return json.dumps({"type": "flow", **rec._asdict()}, separators=(",", ":"))
    body = rec._asdict()
    body["answers"] = list(rec.answers)
    return json.dumps({"type": "dns", **body}, separators=(",", ":"))


def write_flow_file(records: Iterable[FlowRecord | DnsRecord], out: IO[str]) -> int:
    """Writes the records as JSON lines; returns how many."""
    count = 0
    for rec in records:
        out.write(record_to_json(rec))
        out.write("\n")
        count += 1
    return count


def _number(obj: dict[str, Any], key: str, where: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AnomalyError(f"{where}: {key!r} must be a number, not {value!r}")
    return float(value)


def _integer(obj: dict[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AnomalyError(f"{where}: {key!r} must be an integer, not {value!r}")
    return value


def _text(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise AnomalyError(f"{where}: {key!r} must be a string, not {value!r}")
    return value


def parse_record(obj: Any, where: str) -> FlowRecord | DnsRecord:
    """One decoded JSON line -> record; ``AnomalyError`` naming ``where`` if it is not one."""
    if not isinstance(obj, dict):
        raise AnomalyError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "flow":
        state = obj.get("state", "")
        if state not in FLOW_STATES:
            raise AnomalyError(f"{where}: unknown flow state {state!r}")
        start, end = (_number(obj, k, where) for k in _FLOW_TIMES)
        src, dst = (_text(obj, k, where) for k in _FLOW_STRS)
        proto, sport, dport, bytes_out, bytes_in, pkts_out, pkts_in = (
            _integer(obj, k, where) for k in _FLOW_INTS
        )
        return FlowRecord(
            start, end, proto, src, sport, dst, dport,
            bytes_out, bytes_in, pkts_out, pkts_in, state,
        )  # fmt: skip
    if kind == "dns":
        answers = obj.get("answers", [])
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise AnomalyError(f"{where}: 'answers' must be a list of strings")
        return DnsRecord(
            _number(obj, "ts", where),
            _text(obj, "client", where),
            _text(obj, "qname", where).rstrip(".").lower(),
            _integer(obj, "qtype", where),
            _integer(obj, "rcode", where),
            tuple(answers),
        )
    raise AnomalyError(f'{where}: \'type\' must be "flow" or "dns", not {kind!r}')


def read_flow_lines(lines: Iterable[str], name: str) -> Iterator[FlowRecord | DnsRecord]:
    """Records from JSON lines; ``name`` is used in error messages (``name:line: ...``)."""
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        where = f"{name}:{number}"
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise AnomalyError(f"{where}: not JSON ({exc})") from exc
        yield parse_record(obj, where)


def read_flow_file(path: Path) -> Iterator[FlowRecord | DnsRecord]:
    """Records of a flow file (optionally gzipped), streamed line by line."""
    try:
        with path.open("rb") as probe:
            gzipped = probe.read(2) == b"\x1f\x8b"
        opener = gzip.open if gzipped else open
        with opener(path, "rt", encoding="utf-8") as f:
            yield from read_flow_lines(f, str(path))
    except UnicodeDecodeError as exc:
        raise AnomalyError(f"{path}: not a text flow file ({exc.reason})") from exc
    except (OSError, EOFError) as exc:  # gzip: BadGzipFile is an OSError, a cut one EOFError
        reason = getattr(exc, "strerror", None) or exc
        raise AnomalyError(f"{path}: cannot read: {reason}") from exc
