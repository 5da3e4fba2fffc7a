"""Settings: the live policy's DNS lists, "update now", a list added as a policy edit, unblock
requests, the two-factor requirement and the UI's certificate."""

from __future__ import annotations

import datetime as dt
import difflib
import html
import io
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask, url_for

from appliance.engine import Engine
from appliance.nft import MemoryNft
from appliance.store import ConfigStore
from policies.loader import parse_policy
from tests.dns_filter.test_updater import Feed
from tests.webui.conftest import logged_in, token_of, ui_store
from webui.app import create_app
from webui.config import UiConfig
from webui.settings_edit import (
    PREVIEW_ENDPOINT,
    PREVIEW_FIELD,
    EditError,
    add_dns_list,
    install_certificate,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"
WEB_FILTER = (EXAMPLES / "web-filter.yaml").read_text()


def apply_policy(state: Path, text: str, message: str = "test") -> int:
    """Apply ``text`` the way the CLI does (MemoryNft instead of the kernel)."""
    store = ConfigStore(state)
    try:
        engine = Engine(store, MemoryNft())
        plan = engine.plan_text(text, "test.yaml", EXAMPLES)
        return engine.apply(plan, author="test", message=message, force=True).id
    finally:
        store.close()


def make_app(tmp_path: Path, policy: str | None = WEB_FILTER) -> Flask:
    """An app on a state dir whose live version is ``policy`` (None: nothing applied)."""
    state = tmp_path / "state"
    if policy is not None:
        apply_policy(state, policy)
    app = create_app(
        UiConfig(state_dir=state, secure_cookies=False, policy_base=EXAMPLES), nft=MemoryNft()
    )
    app.config["TESTING"] = True
    return app


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path)
    yield app
    ui_store(app).close()


# -- the policy edit -------------------------------------------------------------------------
def test_adding_a_list_changes_only_the_lines_it_adds() -> None:
    new = add_dns_list(WEB_FILTER, "remote", "https://lists.example/hosts.txt")
    added = [
        line
        for line in difflib.ndiff(WEB_FILTER.splitlines(), new.splitlines())
        if line.startswith(("+ ", "- "))
    ]
    assert added == ["+     remote: {urls: [https://lists.example/hosts.txt]}"]
    policy = parse_policy(new, base_dir=EXAMPLES).policy
    assert policy.dns is not None
    assert [(x.name, x.urls) for x in policy.dns.blocklists][-1] == (
        "remote",
        ("https://lists.example/hosts.txt",),
    )


def test_an_allow_list_gets_its_section_and_comments_stay_put() -> None:
    text = WEB_FILTER.replace(
        "    ads-trackers: {files: [lists/ads-trackers.txt]}\n",
        "    ads-trackers: {files: [lists/ads-trackers.txt]}  # small\n  # the mode\n",
    )
    new = add_dns_list(text, "mine", "https://lists.example/allow.txt", "allow")
    assert "  allowlists:\n    mine: {urls: [https://lists.example/allow.txt]}\n" in new
    assert "ads-trackers.txt]}  # small\n  # the mode\n  block_mode" in new
    grown = add_dns_list(text, "other", "https://lists.example/b.txt")
    assert "# small\n    other: {urls: [https://lists.example/b.txt]}\n  # the mode\n" in grown


@pytest.mark.parametrize(
    ("name", "url", "why"),
    [
        ("ads-trackers", "https://x.example/l.txt", "already exists"),
        ("Bad Name", "https://x.example/l.txt", "list name"),
        ("ok", "ftp://x.example/l.txt", "http"),
        ("ok", "https://x.example/a b", "http"),
    ],
)
def test_bad_list_edits_are_refused(name: str, url: str, why: str) -> None:
    with pytest.raises(EditError, match=why):
        add_dns_list(WEB_FILTER, name, url)


def test_a_policy_without_dns_gets_no_list() -> None:
    text = (EXAMPLES / "strict-lockdown.yaml").read_text()
    with pytest.raises(EditError, match="no dns: section"):
        add_dns_list(text, "remote", "https://lists.example/hosts.txt")


# -- the DNS page ------------------------------------------------------------------------------
def test_the_page_shows_upstreams_and_list_summaries(live: Flask) -> None:
    page = logged_in(live, "vic", "viewer").get("/settings").get_data(as_text=True)
    assert "198.51.100.10:53" in page and "version 1" in page
    assert "ads-trackers" in page and "category:adult" in page
    assert "Download the lists now" not in page  # a viewer sees, changes nothing
    data = logged_in(live).get("/api/v1/settings/dns").get_json()
    row = next(r for r in data["lists"] if r["name"] == "ads-trackers")
    assert row["entries"] == 6 and row["format"] == "adblock" and row["kind"] == "block"


def test_without_a_live_policy_the_page_says_so(tmp_path: Path) -> None:
    app = make_app(tmp_path, None)
    page = logged_in(app).get("/settings").get_data(as_text=True)
    assert "No policy has been applied yet" in page
    ui_store(app).close()


def test_update_now_downloads_url_lists_with_progress(tmp_path: Path) -> None:
    feed = Feed()
    feed.body = b"ads.example\ntracker.example\n"
    try:
        app = make_app(tmp_path, add_dns_list(WEB_FILTER, "remote", feed.url))
        admin = logged_in(app)
        before = admin.get("/api/v1/settings/dns").get_json()
        remote = next(r for r in before["lists"] if r["name"] == "remote")
        assert remote["urls"] == [{"url": feed.url, "downloaded": False}]
        resp = admin.post("/settings/lists/update", data={"csrf_token": token_of(admin)})
        assert resp.status_code == 302
        app.extensions["edgeguard_list_job"].wait(10)
        status = admin.get("/api/v1/settings/dns/update").get_json()
        assert status["state"] == "done"
        assert status["results"][feed.url]["ok"] is True
        assert any("updated" in line for line in status["progress"])
        after = admin.get("/api/v1/settings/dns").get_json()
        remote = next(r for r in after["lists"] if r["name"] == "remote")
        assert remote["entries"] == 2 and remote["urls"][0]["downloaded"] is True
        page = admin.get("/settings").get_data(as_text=True)
        assert 'src="/static/settings.js"' in page and 'data-state="done"' in page
        assert "lists-update" in [a["action"] for a in ui_store(app).audit_log()]
        ui_store(app).close()
    finally:
        feed.close()


def test_adding_a_list_hands_the_new_policy_to_the_editor(live: Flask) -> None:
    admin = logged_in(live)
    resp = admin.post(
        "/settings/lists/add",
        data={"name": "remote", "url": "https://lists.example/h.txt", "kind": "block",
              "csrf_token": token_of(admin)},
    )  # fmt: skip
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "remote: {urls: [https://lists.example/h.txt]}" in page
    if PREVIEW_ENDPOINT in live.view_functions:
        with live.test_request_context():
            target = url_for(PREVIEW_ENDPOINT)
        assert f'action="{target}"' in page and f'name="{PREVIEW_FIELD}"' in page
    else:
        assert "policy editor is not installed" in page
    assert ConfigStore(live.extensions["edgeguard_config"].state_dir).live().id == 1  # type: ignore[union-attr]
    bad = admin.post(
        "/settings/lists/add",
        data={"name": "ads-trackers", "url": "https://x.example/", "csrf_token": token_of(admin)},
        follow_redirects=True,
    )
    assert "already exists" in bad.get_data(as_text=True)


def test_changing_upstreams_goes_through_the_plan(live: Flask) -> None:
    admin = logged_in(live)
    resp = admin.post(
        "/settings/upstreams",
        data={"upstreams": "198.51.100.53:53\ntls://198.51.100.54:853#dns.example",
              "csrf_token": token_of(admin)},
    )  # fmt: skip
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "upstreams: [198.51.100.53:53, tls://198.51.100.54:853#dns.example]" in page
    text = page.split('name="text" readonly>', 1)[1].split("</textarea>", 1)[0]

    policy = parse_policy(html.unescape(text), "p.yaml", base_dir=EXAMPLES).policy
    assert policy.dns is not None and policy.dns.upstreams[0] == "198.51.100.53:53"
    bad = admin.post(
        "/settings/upstreams",
        data={"upstreams": "not a server!", "csrf_token": token_of(admin)},
        follow_redirects=True,
    )
    assert "not an upstream" in bad.get_data(as_text=True)


# -- unblock requests ----------------------------------------------------------------------------
def _request_db(state: Path) -> Path:
    db = state / "unblock-requests.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE unblock_requests (id INTEGER PRIMARY KEY, ts REAL, client TEXT,"
            " host TEXT, grp TEXT, rule TEXT, list TEXT, reason TEXT, status TEXT DEFAULT 'open')"
        )
        conn.execute(
            "INSERT INTO unblock_requests (ts, client, host, grp, rule, list, reason)"
            " VALUES (1.7e9, '192.0.2.70', 'games.example', 'kids', 'category:gambling',"
            " 'category:gambling', 'homework <b>site</b>')"
        )
    conn.close()
    return db


def test_unblock_requests_are_listed_and_closed(live: Flask) -> None:
    db = _request_db(live.extensions["edgeguard_config"].state_dir)
    admin = logged_in(live)
    page = admin.get("/settings/requests").get_data(as_text=True)
    assert "games.example" in page and "homework &lt;b&gt;site&lt;/b&gt;" in page
    assert admin.get("/api/v1/unblock-requests").get_json()["requests"][0]["host"] == (
        "games.example"
    )
    resp = admin.post(
        "/settings/requests/1", data={"action": "allow", "csrf_token": token_of(admin)}
    )
    assert resp.status_code == 302
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status FROM unblock_requests").fetchone()[0] == "allowed"
    conn.close()
    again = admin.post(
        "/settings/requests/1", data={"action": "allow", "csrf_token": token_of(admin)}
    )
    assert again.status_code == 404
    entry = ui_store(live).audit_log()[0]
    assert entry["action"] == "unblock-request-allowed" and "games.example" in entry["detail"]
    assert "No open requests" in admin.get("/settings/requests").get_data(as_text=True)


# -- two factors and the certificate ------------------------------------------------------------
def test_admin_and_msp_can_require_two_factor_login(live: Flask) -> None:
    viewer = logged_in(live, "vic", "viewer")
    refused = viewer.post(
        "/settings/security/2fa", data={"require": "1", "csrf_token": token_of(viewer)}
    )
    assert refused.status_code == 403 and ui_store(live).setting("require_2fa") is None
    msp = logged_in(live, "mary", "msp")
    resp = msp.post("/settings/security/2fa", data={"require": "1", "csrf_token": token_of(msp)})
    assert resp.status_code == 302 and ui_store(live).setting("require_2fa") == "1"
    assert ui_store(live).audit_log()[0]["action"] == "require-2fa"
    # mary has no second factor yet: from now on she is sent to set it up
    assert msp.get("/settings").headers["Location"].endswith("/account/2fa")


def _pair(
    tmp_path: Path, *, days: int = 30, name: str = "edgeguard.example"
) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=60))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_a_certificate_pair_is_checked_and_stored_with_a_private_key(
    live: Flask, tmp_path: Path
) -> None:
    cert, key = _pair(tmp_path)
    admin = logged_in(live)
    assert "No certificate installed" in admin.get("/settings/security").get_data(as_text=True)
    resp = admin.post(
        "/settings/security/certificate",
        data={"cert": (io.BytesIO(cert), "c.pem"),
              "key": (io.BytesIO(key), "k.pem"),
              "csrf_token": token_of(admin)},
        content_type="multipart/form-data",
    )  # fmt: skip
    assert resp.status_code == 302
    tls = live.extensions["edgeguard_config"].ui_path / "tls"
    assert stat.S_IMODE((tls / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(tls.stat().st_mode) == 0o700
    page = admin.get("/settings/security").get_data(as_text=True)
    assert "CN=edgeguard.example" in page and "days left" in page
    assert "PRIVATE KEY" not in page and "PRIVATE KEY" not in str(
        admin.get("/api/v1/settings/certificate").get_json()
    )
    assert ui_store(live).audit_log()[0]["action"] == "certificate-installed"


def test_mismatched_expired_and_encrypted_pairs_are_refused(tmp_path: Path) -> None:
    cert, key = _pair(tmp_path)
    other_cert, other_key = _pair(tmp_path)
    with pytest.raises(EditError, match="does not belong"):
        install_certificate(tmp_path / "tls", cert, other_key)
    old_cert, old_key = _pair(tmp_path, days=-1)
    with pytest.raises(EditError, match="expired"):
        install_certificate(tmp_path / "tls", old_cert, old_key)
    locked = serialization.load_pem_private_key(key, None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(EditError, match="encrypted"):
        install_certificate(tmp_path / "tls", cert, locked)
    with pytest.raises(EditError, match="no PEM certificate"):
        install_certificate(tmp_path / "tls", b"hello", key)
    assert not (tmp_path / "tls" / "cert.pem").exists()
    assert install_certificate(tmp_path / "tls", other_cert, other_key).names == (
        "edgeguard.example",
    )
