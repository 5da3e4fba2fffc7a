"""List updates: conditional GETs against a real local HTTP server, file reloads, atomic swap."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dns_filter.matcher import Matcher, MatcherError
from dns_filter.updater import ListSource, ListUpdater


class Feed:
    """An HTTP server on 127.0.0.1 serving one list with an ETag, like a list provider."""

    def __init__(self) -> None:
        self.body = b"ads.example\n"
        self.status = 200
        self.requests: list[dict[str, str]] = []
        feed = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                feed.requests.append(dict(self.headers))
                etag = f'"{hash(feed.body) & 0xFFFFFFFF:x}"'
                if feed.status != 200:
                    self.send_error(feed.status)
                    return
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(feed.body)))
                self.end_headers()
                self.wfile.write(feed.body)

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/list.txt"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def feed() -> Iterator[Feed]:
    f = Feed()
    yield f
    f.close()


def test_url_lists_use_conditional_gets_and_keep_the_old_copy_on_failure(
    feed: Feed, tmp_path: Path
) -> None:
    swaps: list[Matcher] = []
    updater = ListUpdater([ListSource("ads", "block", urls=(feed.url,))], tmp_path, swaps.append)
    assert updater.refresh() is True
    assert swaps[-1].is_blocked("x.ads.example")
    assert updater.refresh() is False  # 304: nothing new, no rebuild
    assert feed.requests[-1].get("If-None-Match")
    assert updater.status[feed.url].detail == "not modified"

    feed.body = b"<html><body>Captive portal: please log in</body></html>\n"
    assert updater.refresh() is False  # no usable entries: the old list stays
    assert (
        not updater.status[feed.url].ok
        and "keeping the previous copy" in updater.status[feed.url].detail
    )
    assert updater.build().is_blocked("ads.example")

    feed.body, feed.status = b"new.example\n", 500
    assert updater.refresh() is False
    assert "HTTP 500" in updater.status[feed.url].detail
    assert updater.build().is_blocked("ads.example")

    feed.status = 200
    assert updater.refresh() is True  # a real new list replaces the old one
    assert swaps[-1].is_blocked("new.example") and not swaps[-1].is_blocked("ads.example")


def test_unreachable_url_is_recorded_not_fatal(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/list.txt"  # discard port: nothing listens
    updater = ListUpdater(
        [ListSource("x", "block", urls=(url,))], tmp_path, lambda m: None, timeout=2
    )
    assert updater.refresh() is False
    assert "download failed" in updater.status[url].detail
    assert len(updater.build().lists) == 0


def test_changed_files_are_reloaded_and_swapped_in(tmp_path: Path) -> None:
    path = tmp_path / "block.txt"
    path.write_text("one.example\n")
    swaps: list[Matcher] = []
    updater = ListUpdater(
        [
            ListSource("local", "block", files=(path,)),
            ListSource("mine", "allow", lines=("ok.one.example",)),
        ],
        tmp_path / "cache",
        swaps.append,
    )
    first = updater.build()
    assert first.is_blocked("x.one.example") and not first.is_blocked("ok.one.example")
    updater.start(file_poll=0.05)
    try:
        time.sleep(0.1)
        path.write_text("two.example\n")
        deadline = time.monotonic() + 5
        while not swaps or not swaps[-1].is_blocked("two.example"):
            assert time.monotonic() < deadline, "file change not picked up"
            time.sleep(0.05)
        assert not swaps[-1].is_blocked("one.example")
        assert not swaps[-1].is_blocked("ok.one.example")
    finally:
        updater.stop()


def test_a_url_copy_refreshed_by_another_process_is_picked_up(feed: Feed, tmp_path: Path) -> None:
    """The web UI's "update now" downloads into the shared cache; the resolver follows."""
    source = ListSource("ads", "block", urls=(feed.url,))
    swaps: list[Matcher] = []
    running = ListUpdater([source], tmp_path, swaps.append, interval=3600)
    assert running.refresh() is True
    running.start(file_poll=0.05)
    try:
        feed.body = b"||other.example^\n"
        other = ListUpdater([source], tmp_path, lambda _: None)
        assert other.fetch(feed.url)
        deadline = time.monotonic() + 5
        while not swaps[-1].is_blocked("other.example"):
            assert time.monotonic() < deadline, "the refreshed copy was not picked up"
            time.sleep(0.05)
    finally:
        running.stop()


def test_summaries_say_what_build_would_without_building(feed: Feed, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("0.0.0.0 tracker.example\n0.0.0.0 bad name\n")
    adblock = tmp_path / "adblock.txt"
    adblock.write_text("||ads.example^\n@@||ok.ads.example^\n/^ad[0-9]+\\./\nexample.com/path\n")
    sources = [
        ListSource("files", "block", files=(hosts, adblock)),
        ListSource("allowed", "allow", lines=("good.example", "not a name")),
        ListSource("feed", "block", urls=(feed.url,)),
    ]
    updater = ListUpdater(sources, tmp_path / "cache", lambda _: None)
    assert updater.refresh() is True  # downloads the URL copy
    built = dict(updater.build().lists)
    assert len(built) == 4 and built["files/adblock.txt"].skipped == 1
    assert updater.summaries() == built

    hosts.unlink()
    with pytest.raises(MatcherError, match="hosts"):
        updater.summaries()
