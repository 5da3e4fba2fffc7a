"""Flow files: records survive a round trip; bad lines are errors naming file and line."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.anomaly.flowfile import read_flow_file, read_flow_lines, write_flow_file
from appliance.anomaly.records import DnsRecord, FlowRecord
from appliance.errors import AnomalyError

FLOW = FlowRecord(
    1_700_000_000.5, 1_700_000_010.25, 6, "192.168.1.50", 40000, "203.0.113.7", 443,
    1200, 64000, 12, 50, "established",
)  # fmt: skip
DNS = DnsRecord(1_700_000_000.4, "192.168.1.50", "www.example.com", 1, 0, ("198.51.100.9",))


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    records = [
        DNS,
        FLOW,
        FLOW._replace(state="open", bytes_in=0),
        DNS._replace(rcode=-1, answers=()),
    ]
    with path.open("w", encoding="utf-8") as f:
        assert write_flow_file(records, f) == 4
    assert list(read_flow_file(path)) == records


def test_lines_are_typed_json_objects_with_the_record_field_names() -> None:
    out = io.StringIO()
    write_flow_file([FLOW, DNS], out)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first == {"type": "flow", **FLOW._asdict()}
    assert second["type"] == "dns" and second["answers"] == ["198.51.100.9"]


def test_comments_blank_lines_optional_and_unknown_fields() -> None:
    lines = [
        "# exported by hand",
        "",
        '{"type": "dns", "ts": 5, "client": "10.0.0.2", "qname": "A.Example.", "qtype": 1,'
        ' "rcode": 3, "extra": "ignored"}',
        '{"type": "flow", "start": 1, "end": 2, "proto": 17, "src": "10.0.0.2", "sport": 1,'
        ' "dst": "10.0.0.3", "dport": 2, "bytes_out": 3, "bytes_in": 4, "pkts_out": 1,'
        ' "pkts_in": 1}',
    ]
    dns, flow = read_flow_lines(lines, "x")
    assert dns == DnsRecord(5.0, "10.0.0.2", "a.example", 1, 3, ())
    assert isinstance(flow, FlowRecord) and flow.state == "" and flow.start == 1.0


def flow_line(**changes: object) -> str:
    return json.dumps({"type": "flow", **FLOW._asdict(), **changes})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"f\.jsonl:3: not JSON"),
        ("[1, 2]", r"f\.jsonl:3: expected a JSON object"),
        ('{"type": "packet"}', r"f\.jsonl:3: 'type' must be \"flow\" or \"dns\""),
        ('{"type": "dns", "ts": 1, "client": "h", "qname": "x", "qtype": 1}', r":3: 'rcode'"),
        ('{"type": "dns", "ts": "soon", "client": "h", "qname": "x", "qtype": 1, "rcode": 0}',
         r":3: 'ts' must be a number"),
        (flow_line(state="closed"), r":3: unknown flow state"),
        (flow_line(sport="443"), r":3: 'sport' must be an integer"),
        (flow_line(bytes_in=True), r":3: 'bytes_in'"),
        (flow_line(end=float("nan")), r":3: 'end' must be a number"),
        (json.dumps({"type": "dns", **DNS._asdict(), "answers": "1.2.3.4"}), r":3: 'answers'"),
    ],
)  # fmt: skip
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "f.jsonl"
    good = json.dumps({"type": "dns", **DNS._asdict()})
    path.write_text(f"{good}\n# comment\n{line}\n{good}\n", encoding="utf-8")
    with pytest.raises(AnomalyError, match=message):
        list(read_flow_file(path))


def test_gzipped_flow_file(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        write_flow_file([FLOW, DNS], f)
    assert list(read_flow_file(path)) == [FLOW, DNS]


def test_unreadable_and_binary_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(AnomalyError, match=r"missing\.jsonl: cannot read"):
        list(read_flow_file(tmp_path / "missing.jsonl"))
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(AnomalyError, match=r"bin\.jsonl"):
        list(read_flow_file(binary))


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_fuzz_any_line_is_a_record_or_a_clear_error(text: str) -> None:
    try:
        for rec in read_flow_lines([text], "fuzz"):
            assert isinstance(rec, FlowRecord | DnsRecord)
    except AnomalyError as exc:
        assert str(exc).startswith("fuzz:1: ")
