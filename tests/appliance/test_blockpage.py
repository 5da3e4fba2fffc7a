"""The block page over real sockets on 127.0.0.1 and ::1."""

from __future__ import annotations

import http.client
import socket
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.blockpage import BlockPageServer, display_host, open_requests
from dns_filter.feeds import BlockNote, RecentBlocks

EVIL_RULE = "||ads.example^<script>alert(1)</script>"
Factory = Callable[..., BlockPageServer]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def blocks() -> RecentBlocks:
    recent = RecentBlocks()
    for client in ("127.0.0.1", "::1"):
        recent.record(
            BlockNote(
                client=client,
                qname="ads.example",
                group="kids & guests",
                rule=EVIL_RULE,
                list_name="<b>easylist</b>",
                at=1_700_000_000.0,
            )
        )
    return recent


@pytest.fixture
def make(blocks: RecentBlocks, tmp_path: Path) -> Iterator[Factory]:
    started: list[BlockPageServer] = []

    def factory(
        *, unblock: bool = False, listen: list[tuple[str, int]] | None = None
    ) -> BlockPageServer:
        server = BlockPageServer(
            listen or [("127.0.0.1", 0)],
            blocks.lookup,
            site_name="Acme <Office>",
            unblock_requests=unblock,
            requests_db=tmp_path / "requests.db" if unblock else None,
        )
        server.start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


def _request(
    server: BlockPageServer,
    method: str = "GET",
    path: str = "/",
    host: str = "ads.example",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    index: int = 0,
) -> tuple[int, dict[str, str], str]:
    addr, port = server.bound[index]
    conn = http.client.HTTPConnection(addr, port, timeout=5)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None and "Content-Length" not in (headers or {}):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode()
    finally:
        conn.close()


def _post(
    server: BlockPageServer,
    fields: dict[str, str],
    content_type: str = "application/x-www-form-urlencoded",
) -> tuple[int, dict[str, str], str]:
    body = urllib.parse.urlencode(fields).encode()
    return _request(
        server, "POST", "/unblock-request", body=body, headers={"Content-Type": content_type}
    )


def test_known_block_shows_group_rule_and_list_escaped(make: Factory) -> None:
    status, headers, text = _request(make(), host="ads.example:80")
    assert status == 403
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert '<meta name="robots" content="noindex">' in text
    assert "ads.example" in text
    assert "kids &amp; guests" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script>" not in text
    assert "&lt;b&gt;easylist&lt;/b&gt;" in text
    assert "Acme &lt;Office&gt;" in text
    assert "http://" not in text and "https://" not in text  # no external resources


def test_subdomain_of_a_blocked_name_finds_the_note(make: Factory) -> None:
    _, _, text = _request(make(), host="cdn.ads.example")
    assert "kids &amp; guests" in text


def test_unknown_host_gets_the_generic_page(make: Factory) -> None:
    status, headers, text = _request(make(), host="news.example")
    assert status == 403
    assert headers["Cache-Control"] == "no-store"
    assert "news.example" in text
    assert "blocked by the office's web filter" in text
    assert "kids" not in text


@pytest.mark.parametrize(
    "host", ['"><script>x()</script>', "a b.example", "[::1]:80", "x.example:99x", ""]
)
def test_junk_host_header_is_not_echoed(make: Factory, host: str) -> None:
    status, _, text = _request(make(), host=host)
    assert status == 403
    assert "this site" in text
    assert "<script>x()" not in text
    assert "a b.example" not in text


def test_display_host() -> None:
    assert display_host("Ads.Example.:8080") == "ads.example"
    assert display_host("192.0.2.1") == "192.0.2.1"
    assert display_host("-bad.example") is None
    assert display_host("a" * 64 + ".example") is None
    assert display_host(None) is None


def test_head_has_headers_and_no_body(make: Factory) -> None:
    status, headers, text = _request(make(), "HEAD")
    assert status == 403
    assert headers["Cache-Control"] == "no-store"
    assert int(headers["Content-Length"]) > 0
    assert text == ""


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
def test_serves_ipv4_and_ipv6(make: Factory) -> None:
    server = make(listen=[("127.0.0.1", 0), ("[::1]", 0)])
    assert [host for host, _ in server.bound] == ["127.0.0.1", "::1"]
    for index in (0, 1):
        status, _, text = _request(server, index=index)
        assert status == 403
        assert "kids &amp; guests" in text  # the ::1 client found its own note


def test_form_only_when_enabled(make: Factory) -> None:
    assert "unblock-request" not in _request(make())[2]
    text = _request(make(unblock=True))[2]
    assert 'action="/unblock-request"' in text
    assert 'name="host" value="ads.example"' in text
    assert 'maxlength="500"' in text


def test_post_when_disabled_is_404(make: Factory) -> None:
    status, _, _ = _post(make(), {"host": "ads.example", "reason": "work"})
    assert status == 404


def test_post_stores_the_request(make: Factory, tmp_path: Path) -> None:
    server = make(unblock=True)
    status, headers, _ = _post(server, {"host": "ads.example", "reason": "need <it>\r\nfor work"})
    assert status == 303
    assert headers["Location"] == "/?sent=1"
    rows = open_requests(tmp_path / "requests.db")
    assert len(rows) == 1
    row = rows[0]
    assert row["client"] == "127.0.0.1"
    assert row["host"] == "ads.example"
    assert row["grp"] == "kids & guests"
    assert row["rule"] == EVIL_RULE
    assert row["list"] == "<b>easylist</b>"
    assert row["reason"] == "need <it>\nfor work"
    assert row["status"] == "open"
    with sqlite3.connect(tmp_path / "requests.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    status, _, text = _request(server, path="/?sent=1")
    assert status == 403
    assert "request was sent" in text
    assert "<textarea" not in text


def test_rate_limit_after_five(make: Factory, tmp_path: Path) -> None:
    server = make(unblock=True)
    for _ in range(5):
        assert _post(server, {"host": "ads.example", "reason": "x"})[0] == 303
    status, headers, _ = _post(server, {"host": "ads.example", "reason": "x"})
    assert status == 429
    assert 0 < int(headers["Retry-After"]) <= 3600
    assert len(open_requests(tmp_path / "requests.db")) == 5


def test_oversized_body_is_413(make: Factory, tmp_path: Path) -> None:
    status, _, _ = _post(make(unblock=True), {"host": "ads.example", "reason": "x" * 5000})
    assert status == 413
    assert open_requests(tmp_path / "requests.db") == []


def test_long_reason_is_400(make: Factory) -> None:
    status, _, _ = _post(make(unblock=True), {"host": "ads.example", "reason": "x" * 501})
    assert status == 400


def test_wrong_content_type_is_415(make: Factory) -> None:
    server = make(unblock=True)
    status, _, _ = _post(server, {"host": "ads.example", "reason": "x"}, "application/json")
    assert status == 415
    status, _, _ = _post(server, {"host": "ads.example"}, "multipart/form-data; boundary=x")
    assert status == 415


def test_bad_form_host_is_400(make: Factory) -> None:
    status, _, _ = _post(make(unblock=True), {"host": "<x>", "reason": "x"})
    assert status == 400


def test_missing_length_is_411(make: Factory) -> None:
    status, _, _ = _request(
        make(unblock=True),
        "POST",
        "/unblock-request",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 411


@pytest.mark.parametrize("junk", [b"GARBAGE\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n"])
def test_malformed_request_gets_400_and_server_keeps_serving(make: Factory, junk: bytes) -> None:
    server = make()
    with socket.create_connection(server.bound[0], timeout=5) as sock:
        sock.sendall(junk)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.0 400")
    assert _request(server)[0] == 403


def test_a_silent_client_does_not_block_others(make: Factory) -> None:
    server = make()
    with socket.create_connection(server.bound[0], timeout=5):
        assert _request(server)[0] == 403


def test_unblock_needs_a_database() -> None:
    with pytest.raises(ValueError):
        BlockPageServer(
            [("127.0.0.1", 0)],
            RecentBlocks().lookup,
            site_name="x",
            unblock_requests=True,
            requests_db=None,
        )


def test_open_requests_of_a_missing_database(tmp_path: Path) -> None:
    assert open_requests(tmp_path / "none.db") == []
