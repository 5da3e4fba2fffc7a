"""Backup and restore of the whole configuration: policy history, live policy, UI users.

A backup is a ``.tar.gz`` with ``state.db`` (the config store: every version, the confirm
timer, events), ``policy.yaml`` (the live policy, for reading without tools), ``ui.db``
(users with password hashes, API token hashes, settings, the audit log) and a manifest with
each file's SHA-256. Not in it: the query log (traffic, not configuration), the session key,
the TLS key, and the users' TOTP secrets (a backup should hold no usable secret, so after a
restore everyone enrols their authenticator again).

The databases are copied with SQLite's backup API, which reads a consistent snapshot while
the controller and the UI keep writing. A restore goes the same way in reverse: into the
live databases, through SQLite, as one transaction each, so open connections (the UI's, the
controller's) see the old or the new content and a WAL file is never left pointing at a
replaced file. Before that, everything is checked: only the known members, regular files,
bounded sizes, checksums, ``PRAGMA integrity_check``, only the tables we made (no triggers
or views that would run inside the UI later), at least one admin, and a policy that loads.
The audit log is never rolled back: the current one is carried over into the restored UI
database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import sqlite3
import tarfile
import tempfile
import time
import zlib
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from flask import (
    Blueprint,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from werkzeug.wrappers import Response

from appliance.atomic import write_atomic
from policies.errors import PolicyError
from policies.loader import parse_policy
from webui.api import api_doc
from webui.bridge import appliance
from webui.security import audit, roles_required, store
from webui.users import json_error

bp = Blueprint("backup", __name__)
api_bp = Blueprint("backup_api", __name__, url_prefix="/api/v1")

FORMAT = "edgeguard-backup/1"
MANIFEST = "edgeguard-backup.json"
MEMBERS = (MANIFEST, "state.db", "ui.db", "policy.yaml")
MAX_MEMBER = 64 * 1024 * 1024
MAX_TOTAL = 128 * 1024 * 1024
MAX_UPLOAD = 32 * 1024 * 1024  # compressed; the app's default request limit is 2 MiB
# Tables (and their indexes) the stores create: nothing else may come in with a restore.
STATE_TABLES = {"versions", "confirm", "events"}
UI_TABLES = {"users", "tokens", "login_failures", "audit", "settings"}


class BackupError(ValueError):
    """The upload is not a backup this appliance can restore; ``problems`` says why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# -- making one ----------------------------------------------------------------------------
def _copy_db(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database, as one self-contained file."""
    with (
        closing(sqlite3.connect(source, timeout=30)) as src,
        closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")


def _scrub_ui(db: Path) -> None:
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("UPDATE users SET totp_secret = NULL, totp_last_step = -1, recovery = '[]'")
        conn.execute("DELETE FROM login_failures")
        conn.execute("DELETE FROM settings WHERE key = 'setup_token'")
        conn.execute("VACUUM")  # freed pages would still hold the secrets


def _live_text(state_db: Path) -> tuple[int | None, str | None]:
    with closing(sqlite3.connect(state_db)) as conn:
        row = conn.execute(
            "SELECT id, policy_text FROM versions WHERE status IN ('good', 'unconfirmed')"
            " ORDER BY id DESC LIMIT 1"
        ).fetchone()
    return (int(row[0]), str(row[1])) if row else (None, None)


def make_backup(state_dir: Path, ui_db: Path) -> bytes:
    """The archive's bytes (a few MB at most: texts compress well)."""
    with tempfile.TemporaryDirectory(dir=state_dir, prefix=".backup-") as tmp:
        work = Path(tmp)
        _copy_db(state_dir / "state.db", work / "state.db")
        _copy_db(ui_db, work / "ui.db")
        _scrub_ui(work / "ui.db")
        version, text = _live_text(work / "state.db")
        if text is not None:
            (work / "policy.yaml").write_text(text, encoding="utf-8")
        names = [n for n in MEMBERS[1:] if (work / n).exists()]
        manifest = {
            "format": FORMAT,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "live_version": version,
            "files": {n: hashlib.sha256((work / n).read_bytes()).hexdigest() for n in names},
        }
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz") as tar:
            for name, data in [
                (MANIFEST, json.dumps(manifest, indent=2).encode()),
                *((n, (work / n).read_bytes()) for n in names),
            ]:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()


# -- checking one --------------------------------------------------------------------------
@dataclass
class Checked:
    """A validated backup, unpacked in ``folder``, ready for ``restore``."""

    folder: Path
    manifest: dict[str, Any]
    live_version: int | None
    admins: list[str] = field(default_factory=list)


def _uri(path: Path, *, read_only: bool = True) -> str:
    return path.resolve().as_uri() + ("?mode=ro" if read_only else "")


def _unpack(upload: IO[bytes], folder: Path) -> None:
    """Write the known members into ``folder`` ourselves: never ``extract``, so no name,
    link or device in the archive can place anything anywhere else."""
    total = 0
    try:
        with tarfile.open(fileobj=upload, mode="r:gz") as tar:
            for count, member in enumerate(iter(tar.next, None)):
                if count >= len(MEMBERS):
                    raise BackupError(["more members than a backup has"])
                if member.name not in MEMBERS or not member.isreg():
                    raise BackupError([f"unexpected member {member.name!r} (not a backup file)"])
                total += member.size
                if member.size > MAX_MEMBER or total > MAX_TOTAL:
                    raise BackupError([f"{member.name} is larger than a backup can be"])
                target = folder / member.name
                if target.exists():
                    raise BackupError([f"{member.name} appears twice"])
                source = tar.extractfile(member)
                assert source is not None  # a regular file
                target.write_bytes(source.read(MAX_MEMBER + 1))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BackupError([f"not a readable .tar.gz ({exc})"]) from exc


def _check_db(path: Path, tables: set[str], need: str) -> list[str]:
    """Integrity, and only our tables and their indexes (no triggers, no views)."""
    name = path.name
    try:
        with closing(sqlite3.connect(_uri(path), uri=True)) as conn:
            conn.execute("PRAGMA trusted_schema=OFF")
            result = conn.execute("PRAGMA integrity_check").fetchall()
            if result != [("ok",)]:
                return [f"{name} is damaged: {result[0][0]}"]
            objects = conn.execute("SELECT type, name, tbl_name FROM sqlite_master").fetchall()
            conn.execute(need).fetchall()
    except sqlite3.Error as exc:
        return [f"{name} is not a usable database ({exc})"]
    extra = [
        f"{kind} {obj}" for kind, obj, table in objects
        if not (kind in ("table", "index") and table in tables)
    ]  # fmt: skip
    return [f"{name} holds objects a backup never has: {', '.join(extra)}"] if extra else []


def check_backup(upload: IO[bytes], folder: Path, policy_base: Path) -> Checked:
    """Unpack into ``folder`` (empty, on the state directory's file system) and validate
    everything; raises BackupError with every problem found."""
    _unpack(upload, folder)
    problems: list[str] = []
    if not (folder / MANIFEST).exists():
        raise BackupError([f"no {MANIFEST}: not an EdgeGuard backup"])
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise BackupError([f"{MANIFEST} is not JSON ({exc})"]) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError([f"{MANIFEST} is not of format {FORMAT}"])
    sums = manifest.get("files")
    if not isinstance(sums, dict):
        raise BackupError([f"{MANIFEST} lists no files"])
    for name in MEMBERS[1:]:
        present = (folder / name).exists()
        if present != (name in sums):
            problems.append(f"{name}: {'not in the manifest' if present else 'missing'}")
        elif present and hashlib.sha256((folder / name).read_bytes()).hexdigest() != sums[name]:
            problems.append(f"{name}: checksum does not match the manifest")
    for need in ("state.db", "ui.db"):
        if need not in sums:
            problems.append(f"{need} is required")
    if problems:
        raise BackupError(problems)
    problems += _check_db(
        folder / "state.db",
        STATE_TABLES,
        "SELECT id, created, author, message, policy_sha256, policy_text, ruleset_text, status,"
        " error, rolled_back_to FROM versions LIMIT 1",
    )
    problems += _check_db(
        folder / "ui.db",
        UI_TABLES,
        "SELECT id, name, role, pw_hash, totp_secret, session_epoch FROM users LIMIT 1",
    )
    if problems:
        raise BackupError(problems)
    with closing(sqlite3.connect(_uri(folder / "ui.db"), uri=True)) as conn:
        admins = [r[0] for r in conn.execute("SELECT name FROM users WHERE role = 'admin'")]
    if not admins:
        problems.append("ui.db has no admin: nobody could manage the appliance after a restore")
    version, text = _live_text(folder / "state.db")
    policy = folder / "policy.yaml"
    on_file = policy.read_text(encoding="utf-8", errors="replace") if policy.exists() else None
    if on_file != text:
        problems.append("policy.yaml is not the live version's text in state.db")
    elif text is not None:
        try:
            parse_policy(text, "policy.yaml (backup)", base_dir=policy_base)
        except PolicyError as exc:
            problems.append(f"the backup's live policy does not load here: {exc}")
    if problems:
        raise BackupError(problems)
    return Checked(folder, manifest, version, admins)


# -- restoring one -------------------------------------------------------------------------
def _restore_db(source: Path, target: Path) -> None:
    """Copy ``source`` into the live database ``target`` in one SQLite transaction."""
    with closing(sqlite3.connect(target, timeout=30)) as dst:
        page_size = dst.execute("PRAGMA page_size").fetchone()[0]
        with closing(sqlite3.connect(source, isolation_level=None)) as src:
            if src.execute("PRAGMA page_size").fetchone()[0] != page_size:
                src.execute(f"PRAGMA page_size={int(page_size)}")
                src.execute("VACUUM")  # WAL databases only take pages of their own size
            src.backup(dst)


def _carry_over(staged_ui: Path, live_ui: Path) -> None:
    """Keep the current audit log, and end every session: each restored user's session
    epoch is moved past every epoch in use now, so a session of the user who had the same
    id before the restore cannot continue as somebody else."""
    with closing(sqlite3.connect(_uri(staged_ui, read_only=False), uri=True)) as conn:
        conn.isolation_level = None
        conn.execute("ATTACH DATABASE ? AS live", (_uri(live_ui),))
        conn.execute("BEGIN")
        conn.execute("DELETE FROM main.audit")
        conn.execute(
            "INSERT INTO main.audit (id, ts, user, address, action, detail)"
            " SELECT id, ts, user, address, action, detail FROM live.audit"
        )
        conn.execute(
            "UPDATE main.users SET session_epoch = session_epoch + 1 +"
            " (SELECT COALESCE(MAX(session_epoch), 0) FROM live.users)"
        )
        conn.execute("COMMIT")


def restore(checked: Checked, state_dir: Path, ui_db: Path) -> None:
    """Replace the configuration with the checked backup (the caller holds the engine lock,
    so no apply runs meanwhile)."""
    _carry_over(checked.folder / "ui.db", ui_db)
    _restore_db(checked.folder / "state.db", state_dir / "state.db")
    _restore_db(checked.folder / "ui.db", ui_db)
    policy = checked.folder / "policy.yaml"
    if policy.exists():
        write_atomic(state_dir / "policy.yaml", policy.read_bytes())
    else:  # nothing was live then: a policy.yaml left here would claim otherwise
        (state_dir / "policy.yaml").unlink(missing_ok=True)


# -- pages and API -------------------------------------------------------------------------
def _raise_upload_limit(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """Runs before the CSRF check reads the form, so the larger limit is in force then."""
    if endpoint in ("backup.restore_page", "backup_api.api_restore"):
        # settable on Flask >= 3.1; webui.app's request class makes it so on bookworm's 2.2,
        # whose Werkzeug stubs still call it read-only
        request.max_content_length = MAX_UPLOAD  # type: ignore[misc,unused-ignore]


bp.url_value_preprocessor(_raise_upload_limit)
api_bp.url_value_preprocessor(_raise_upload_limit)


def _download() -> Response:
    bridge = appliance()
    bridge.engine()  # opens (and on a fresh box creates) the config store
    data = make_backup(bridge.config.state_dir, store().path)
    audit("backup-downloaded", f"{len(data)} bytes")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return send_file(
        io.BytesIO(data),
        mimetype="application/gzip",
        as_attachment=True,
        download_name=f"edgeguard-backup-{stamp}.tar.gz",
    )


def _check_and_restore(upload: IO[bytes], check_only: bool) -> Checked:
    bridge = appliance()
    with tempfile.TemporaryDirectory(dir=bridge.config.state_dir, prefix=".restore-") as tmp:
        checked = check_backup(upload, Path(tmp), bridge.policy_base)
        if not check_only:
            with bridge.engine().locked():
                restore(checked, bridge.config.state_dir, store().path)
                bridge.engine().store.event(
                    "restore", f"configuration restored from a backup by {g.user.name}"
                )
            audit("backup-restored", f"made {checked.manifest.get('created')}")
        return checked


@bp.route("/settings/backup")
@roles_required("admin", "msp")
def index() -> Any:
    return render_template("settings_backup.html")


@bp.route("/settings/backup/download")
@roles_required("admin", "msp")
def download() -> Response:
    return _download()


@bp.route("/settings/backup/restore", methods=["POST"])
@roles_required("admin")
def restore_page() -> Any:
    upload = request.files.get("backup")
    check_only = request.form.get("check_only") == "1"
    if upload is None or not upload.filename:
        flash("Choose a backup file.", "error")
        return redirect(url_for("backup.index"))
    if not check_only and request.form.get("confirm") != "1":
        flash("Tick the box to confirm that the restore replaces the configuration.", "error")
        return redirect(url_for("backup.index"))
    try:
        checked = _check_and_restore(upload.stream, check_only)
    except BackupError as exc:
        audit("backup-refused", "; ".join(exc.problems))
        return render_template("settings_backup.html", problems=exc.problems), 400
    return render_template("settings_backup.html", checked=checked, restored=not check_only)


@api_bp.route("/backup")
@api_doc("Download a backup of the whole configuration (.tar.gz)", roles=("admin", "msp"))
@roles_required("admin", "msp")
def api_backup() -> Response:
    return _download()


@api_bp.route("/backup/restore", methods=["POST"])
@api_doc(
    "Check a backup (check_only=1) or restore it: replaces the policy history, the live "
    "policy and the users",
    params={"check_only": "1: only validate"},
    body="multipart/form-data with the file in field 'backup'",
    roles=("admin",),
)
@roles_required("admin")
def api_restore() -> Response:
    upload = request.files.get("backup")
    if upload is None:
        return json_error(400, "send the backup as multipart field 'backup'")
    check_only = (request.args.get("check_only") or request.form.get("check_only")) == "1"
    try:
        checked = _check_and_restore(upload.stream, check_only)
    except BackupError as exc:
        audit("backup-refused", "; ".join(exc.problems))
        resp = jsonify(error="not restored", problems=exc.problems)
        resp.status_code = 400
        return resp
    return jsonify(
        restored=not check_only,
        created=checked.manifest.get("created"),
        live_version=checked.live_version,
        admins=checked.admins,
    )
