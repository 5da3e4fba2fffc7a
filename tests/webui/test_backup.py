"""Backup and restore: a consistent archive without secrets, checked fully before anything is
replaced, restored through SQLite, audit log kept, sessions ended."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from appliance.store import ConfigStore
from tests.webui.conftest import PASSWORD, logged_in, token_of, ui_store
from tests.webui.test_settings import EXAMPLES, WEB_FILTER, apply_policy, make_app
from webui import backup
from webui.backup import MANIFEST

SMALL_OFFICE = (EXAMPLES / "small-office.yaml").read_text()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path)
    yield app
    ui_store(app).close()


def _state(app: Flask) -> Path:
    path: Path = app.extensions["edgeguard_config"].state_dir
    return path


def _download(client: FlaskClient) -> bytes:
    resp = client.get("/settings/backup/download")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.headers["Content-Disposition"].startswith("attachment; filename=edgeguard-backup-")
    return bytes(resp.data)


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def _pack(files: dict[str, bytes], *, manifest: bool = True) -> bytes:
    """A backup-shaped archive of ``files`` (with a matching manifest unless told not to)."""
    if manifest:
        sums = {n: hashlib.sha256(d).hexdigest() for n, d in files.items() if n != MANIFEST}
        files = {MANIFEST: json.dumps({"format": "edgeguard-backup/1", "files": sums}).encode(),
                 **files}  # fmt: skip
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _restore(client: FlaskClient, data: bytes, *, check_only: bool = False) -> tuple[int, str]:
    """POST the file as a browser would (encoded here: the test client would spool a big
    body to a temporary file it never closes)."""
    fields: dict[str, object] = {
        "backup": FileStorage(io.BytesIO(data), "b.tar.gz", content_type="application/gzip"),
        "csrf_token": token_of(client, "/account"),
        "check_only" if check_only else "confirm": "1",
    }
    boundary, body = encode_multipart(fields)
    resp = client.post(
        "/settings/backup/restore",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    return resp.status_code, resp.get_data(as_text=True)


def test_a_backup_holds_the_configuration_and_no_secrets(live: Flask, tmp_path: Path) -> None:
    admin = logged_in(live)
    alice = ui_store(live).user_by_name("alice")
    assert alice is not None
    ui_store(live).enable_totp(alice.id, "JBSWY3DPEHPK3PXP", 0, ["hash"])
    files = _members(_download(admin))
    assert set(files) == {MANIFEST, "state.db", "ui.db", "policy.yaml"}
    assert files["policy.yaml"].decode() == WEB_FILTER
    manifest = json.loads(files[MANIFEST])
    assert manifest["live_version"] == 1
    assert manifest["files"]["ui.db"] == hashlib.sha256(files["ui.db"]).hexdigest()
    (tmp_path / "ui.db").write_bytes(files["ui.db"])
    with sqlite3.connect(tmp_path / "ui.db") as conn:
        assert conn.execute("SELECT totp_secret, recovery FROM users").fetchall() == [(None, "[]")]
        assert conn.execute("SELECT pw_hash FROM users").fetchone()[0].startswith("scrypt$")
    conn.close()
    assert b"JBSWY3DPEHPK3PXP" not in files["ui.db"]  # not even in free pages
    assert not any(b"querylog" in name.encode() for name in files)
    assert ui_store(live).audit_log()[0]["action"] == "backup-downloaded"


def test_a_restore_brings_the_configuration_back(live: Flask) -> None:
    admin = logged_in(live)
    data = _download(admin)
    apply_policy(_state(live), SMALL_OFFICE, "after the backup")
    ui_store(live).add_user("mallory", PASSWORD, "admin")
    status, page = _restore(admin, data, check_only=True)
    assert status == 200 and "The backup is good" in page and "alice" in page
    assert ui_store(live).user_by_name("mallory") is not None  # only checked
    status, page = _restore(admin, data)
    assert status == 200 and "Restored" in page
    store = ConfigStore(_state(live))
    live_version = store.live()
    assert live_version is not None and live_version.id == 1
    assert store.texts(1)[0] == WEB_FILTER == (_state(live) / "policy.yaml").read_text()
    assert store.events(1)[0][1] == "restore"
    store.close()
    assert ui_store(live).user_by_name("mallory") is None
    actions = [e["action"] for e in ui_store(live).audit_log()]
    assert actions[0] == "backup-restored" and "backup-downloaded" in actions  # log kept
    assert admin.get("/settings").status_code == 302  # every session ended
    assert logged_in(live).get("/settings").status_code == 200


def _ui_db(tmp_path: Path, sql: str = "") -> bytes:
    """A UI database as the store makes it, with one admin, then ``sql`` applied."""
    from webui.store import UiStore

    store = UiStore(tmp_path / "made" / "ui.db")
    store.add_user("alice", PASSWORD, "admin")
    store.close()
    with sqlite3.connect(tmp_path / "made" / "ui.db") as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
        if sql:
            conn.executescript(sql)
    conn.close()
    return (tmp_path / "made" / "ui.db").read_bytes()


def _state_db(app: Flask, tmp_path: Path) -> bytes:
    files = _members(_download(logged_in(app)))
    return files["state.db"]


BAD: list[tuple[str, Callable[[bytes, bytes], bytes], str]] = [
    ("junk", lambda s, u: b"not a tarball at all", "not a readable .tar.gz"),
    ("traversal", lambda s, u: _pack({"../state.db": s, "ui.db": u}), "unexpected member"),
    ("absolute", lambda s, u: _pack({"/etc/passwd": b"x", "ui.db": u}), "unexpected member"),
    ("extra", lambda s, u: _pack({"state.db": s, "ui.db": u, "run.sh": b"x"}), "unexpected"),
    (
        "no manifest",
        lambda s, u: _pack({"state.db": s, "ui.db": u}, manifest=False),
        "not an EdgeGuard",
    ),
    ("damaged", lambda s, u: _pack({"state.db": s[:4096] + b"\0" * 50, "ui.db": u}), "state.db"),
    ("no ui", lambda s, u: _pack({"state.db": s}), "ui.db is required"),
]


@pytest.mark.parametrize(("name", "make", "why"), BAD, ids=[b[0] for b in BAD])
def test_bad_archives_are_refused_and_change_nothing(
    live: Flask, tmp_path: Path, name: str, make: Callable[[bytes, bytes], bytes], why: str
) -> None:
    state_db, ui_db = _state_db(live, tmp_path), _ui_db(tmp_path)
    admin = logged_in(live, "root", "admin")
    status, page = _restore(admin, make(state_db, ui_db))
    assert status == 400 and "Not restored" in page
    assert why in page.replace("&#39;", "'"), page
    assert ui_store(live).user_by_name("root") is not None
    assert ui_store(live).audit_log()[0]["action"] == "backup-refused"


def test_links_and_checksums_and_foreign_schema_are_refused(live: Flask, tmp_path: Path) -> None:
    state_db = _state_db(live, tmp_path)
    admin = logged_in(live)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        link = tarfile.TarInfo("state.db")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
    assert "unexpected member" in _restore(admin, out.getvalue())[1]
    archive = _pack({"state.db": state_db, "ui.db": _ui_db(tmp_path)})
    files = _members(archive)
    files["ui.db"] = _ui_db(tmp_path / "other")  # a different file than the manifest says
    status, page = _restore(admin, _pack(files, manifest=False))
    assert status == 400 and "checksum" in page
    trigger = "CREATE TRIGGER t AFTER INSERT ON audit BEGIN UPDATE users SET role = 'admin'; END;"
    status, page = _restore(
        admin, _pack({"state.db": state_db, "ui.db": _ui_db(tmp_path / "t", trigger)})
    )
    assert status == 400 and "trigger t" in page
    no_admin = _ui_db(tmp_path / "n", "UPDATE users SET role = 'viewer';")
    status, page = _restore(admin, _pack({"state.db": state_db, "ui.db": no_admin}))
    assert status == 400 and "no admin" in page


def test_the_policy_must_match_and_load(live: Flask, tmp_path: Path) -> None:
    files = _members(_download(logged_in(live)))
    admin = logged_in(live)
    del files[MANIFEST]
    status, page = _restore(admin, _pack({**files, "policy.yaml": SMALL_OFFICE.encode()}))
    assert status == 400 and "not the live version" in page
    broken = tmp_path / "state.db"
    broken.write_bytes(files["state.db"])
    text = WEB_FILTER.replace("lists/ads-trackers.txt", "lists/gone.txt")
    with sqlite3.connect(broken) as conn:
        conn.execute("UPDATE versions SET policy_text = ?", (text,))
    conn.close()
    status, page = _restore(
        admin, _pack({**files, "state.db": broken.read_bytes(), "policy.yaml": text.encode()})
    )
    assert status == 400 and "does not load here" in page and "gone.txt" in page


def test_only_admins_restore_and_big_uploads_reach_the_check(live: Flask) -> None:
    msp = logged_in(live, "mary", "msp")
    assert msp.get("/settings/backup").status_code == 200
    assert _restore(msp, b"x")[0] == 403
    viewer = logged_in(live, "vic", "viewer")
    assert viewer.get("/settings/backup/download").status_code == 403
    admin = logged_in(live)
    status, page = _restore(admin, b"\0" * (3 * 1024 * 1024))  # over the app's 2 MiB default
    assert status == 400 and "not a readable" in page
    resp = admin.post(
        "/settings/backup/restore",
        data={"backup": (io.BytesIO(_download(admin)), "b.tgz"), "csrf_token": token_of(admin)},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 302  # no confirmation ticked: nothing happens


def test_the_api_checks_and_restores_with_a_token(live: Flask) -> None:
    logged_in(live)
    alice = ui_store(live).user_by_name("alice")
    assert alice is not None
    token = ui_store(live).new_token(alice.id, "msp backup")
    client = live.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    data = client.get("/api/v1/backup", headers=auth).data
    resp = client.post(
        "/api/v1/backup/restore?check_only=1",
        data={"backup": (io.BytesIO(data), "b.tgz")},
        headers=auth,
        content_type="multipart/form-data",
    )
    assert resp.status_code == 200 and resp.get_json()["restored"] is False
    assert resp.get_json()["admins"] == ["alice"] and resp.get_json()["live_version"] == 1
    resp = client.post(
        "/api/v1/backup/restore",
        data={"backup": (io.BytesIO(b"junk"), "b.tgz")},
        headers=auth,
        content_type="multipart/form-data",
    )
    assert resp.status_code == 400 and resp.get_json()["problems"]


def test_only_the_restore_has_the_larger_upload_limit(
    live: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The restore raises the limit for its own request (on every Flask we run on: 3.1's
    setter, or webui.app.UploadLimitRequest on Debian bookworm's 2.2); every other form keeps
    the app's 2 MiB, and the restore's own limit still holds."""
    monkeypatch.setattr(backup, "MAX_UPLOAD", 4 * 1024 * 1024)
    admin = logged_in(live)
    three_mib = b"\0" * (3 * 1024 * 1024)
    assert _restore(admin, three_mib)[0] == 400  # read and checked: not a backup
    assert _restore(admin, three_mib + three_mib)[0] == 413  # over the restore's limit
    fields = {"csrf_token": token_of(admin, "/account"), "pad": three_mib.decode()}
    boundary, body = encode_multipart(fields)
    resp = admin.post(
        "/logout", data=body, content_type=f"multipart/form-data; boundary={boundary}"
    )
    assert resp.status_code == 413  # the app's limit: the raised one was this request's only
    assert _restore(admin, three_mib)[0] == 400  # still logged in; the restore gets it again
