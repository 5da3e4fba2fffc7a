"""The MSP's parsed feeds: the agent enforces them instead of re-parsing, and refuses a
damaged one like any other bad blob. Same real HTTP host and store as test_agent."""

from __future__ import annotations

from typing import Any

from appliance.sync.metadata import make_bundle
from appliance.sync.publish import publish
from policies.feed_blob import encode_feed
from policies.feeds import FeedData
from tests.appliance.sync.conftest import (
    EXAMPLES,
    FILES,
    OFFICE,
    SITE,
    Appliance,
    Msp,
    assert_refused,
    edit,
)

FEED = "feeds/spamhaus-drop.txt"
# 203.0.113.0/24: in no line of the feed's text, so it can only come from the parsed form.
MARKER = FeedData(v4=[(0xCB007100, 0xCB0071FF)], v6=[], entries=1, skipped=[], skipped_count=0)


def _publish_with_parsed(msp: Msp, version: int, parsed: bytes) -> dict[str, Any]:
    files = {name: (EXAMPLES / name).read_bytes() for name in FILES}
    envelope, blobs = make_bundle(
        SITE, version, edit(OFFICE, "Ten desks", f"Ten desks v{version}"), files, ("site",),
        msp.clock.at(30), msp.bundle_key, parsed={FEED: parsed}, created=msp.clock.at(-1),
    )  # fmt: skip
    publish(msp.publish_dir, envelope, blobs)
    return envelope


def test_the_parsed_feed_is_what_gets_enforced(msp: Msp, box: Appliance) -> None:
    _publish_with_parsed(msp, 1, encode_feed(MARKER))
    assert box.sync().result == "applied"
    table = box.nft.table or ""
    assert "203.0.113.0/24" in table
    assert "198.51.100.64/28" not in table  # the text's first entry: it was not parsed


def test_without_a_parsed_form_the_feed_text_is_parsed(msp: Msp, box: Appliance) -> None:
    msp.publish(1, edit(OFFICE, "Ten desks", "Nine desks"))
    assert box.sync().result == "applied"
    assert "198.51.100.64/28" in (box.nft.table or "")


def test_a_tampered_parsed_feed_is_refused(msp: Msp, box: Appliance) -> None:
    envelope = _publish_with_parsed(msp, 1, encode_feed(MARKER))
    digest = envelope["signed"]["files"][FEED]["parsed"]["sha256"]
    (msp.publish_dir / "blobs" / digest).write_bytes(encode_feed(MARKER)[:-1] + b"\x00")
    assert_refused(msp, box, "hash-mismatch", OFFICE)


def test_a_signed_parsed_feed_that_does_not_decode_is_refused(msp: Msp, box: Appliance) -> None:
    _publish_with_parsed(msp, 1, b"EGFEED1\n{not json}\n")
    assert_refused(msp, box, "invalid-policy", OFFICE)
    assert "spamhaus-drop.txt" in box.state_json()["last_sync"]["error"]
