"""One secret hash seed per box, so compiled block lists can be reused across restarts.

Why: the resolver's list indexes key names by the built-in ``hash()`` (fast, keyed SipHash; see
``dns_filter.index``). Python seeds it at random per process, so an index written to disk by one
process is useless to the next, and every start parsed the 1M-name list again (~0.6 s here,
seconds on a Pi) before it could answer. ``PYTHONHASHSEED`` fixes the seed, but is read only
when the interpreter starts: the commands that serve DNS (``run``, ``dns``) call
``pin_hash_seed`` first thing, which re-executes the same command line once with the seed of
the box when the environment does not carry it yet (~50 ms here, before any heavy import).

The seed stays secret (a file only its owner reads): a seed known to an attacker would let
them craft a name whose key equals an allow-listed one. ``PYTHONHASHSEED`` takes 32 bits; an
attacker never sees a key, so they cannot search them. The file's place: the environment's
``EDGEGUARD_HASH_SEED_FILE`` (the appliance's unit sets one in its state directory; empty
turns pinning off), else ``$XDG_CACHE_HOME/edgeguard/hashseed`` (``~/.cache``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from pathlib import Path

__all__ = ["SEED_FILE_ENV", "hash_seed_pinned", "pin_hash_seed", "read_or_create_seed", "seed_file"]

SEED_FILE_ENV = "EDGEGUARD_HASH_SEED_FILE"
_TRIED_ENV = "EDGEGUARD_HASH_SEED_TRIED"  # set across the re-exec: never loop
_pinned = False  # set by pin_hash_seed: read once at start, not at every list build


def seed_file() -> Path | None:
    """Where the box's seed lives, or None when pinning is turned off."""
    configured = os.environ.get(SEED_FILE_ENV)
    if configured is not None:
        return Path(configured) if configured else None
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # unset, or relative (which the XDG spec says to ignore)
        base = os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        return None  # no home directory: never a seed relative to the working directory
    return Path(base) / "edgeguard" / "hashseed"


def read_or_create_seed(path: Path) -> int:
    """The seed stored in ``path``; a new random one is written (mode 0600) if there is none.

    A file that holds no valid seed is replaced. Two processes creating it at once agree: the
    file is linked into place only if absent, and the loser reads the winner's. Raises
    ``OSError`` when the file can neither be read nor created.
    """
    try:
        seed = _parse(path.read_text(encoding="ascii"))
    except FileNotFoundError:
        seed = None
    except UnicodeDecodeError:
        seed = -1
    if seed is not None and seed > 0:
        return seed
    if seed is not None:
        path.unlink()  # junk: replaced below
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{secrets.randbelow(2**32 - 1) + 1}\n")  # 0 would switch hashing's seed off
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    seed = _parse(path.read_text(encoding="ascii"))
    if seed < 0:
        raise OSError(f"{path}: holds no hash seed")
    return seed


def _parse(text: str) -> int:
    """The seed in ``text``, or -1 if it holds none (0 would turn hash randomisation off)."""
    value = text.strip()
    if not value.isdigit() or not 1 <= int(value) < 2**32:
        return -1
    return int(value)


def hash_seed_pinned() -> bool:
    """True if ``pin_hash_seed`` found this interpreter hashing with the box's seed (so list
    caches may be used). A process that never called it (a test's in-process call) is not."""
    return _pinned


def pin_hash_seed() -> bool:
    """Make sure this interpreter hashes with the box's seed: re-execute it with the seed if
    it does not (this call then does not return). False when the seed cannot be had (no
    writable place, pinning turned off, or the re-executed process still lacks it): the
    command then runs as before, only without list caches. Call it before heavy imports.
    """
    global _pinned
    path = seed_file()
    if path is None or sys.flags.ignore_environment:  # -E/-I: PYTHONHASHSEED is not read
        return False
    try:
        seed = read_or_create_seed(path)
    except OSError as exc:
        sys.stderr.write(f"edgeguard: no hash seed ({exc}); lists are parsed at every start\n")
        return False
    if os.environ.get("PYTHONHASHSEED") == str(seed):
        _pinned = True
        return True
    if os.environ.get(_TRIED_ENV):
        return False
    before = os.environ.get("PYTHONHASHSEED")
    os.environ["PYTHONHASHSEED"] = str(seed)
    os.environ[_TRIED_ENV] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except OSError as exc:  # no interpreter path (embedded) or exec refused: run unpinned
        if before is None:
            del os.environ["PYTHONHASHSEED"]
        else:
            os.environ["PYTHONHASHSEED"] = before
        sys.stderr.write(f"edgeguard: cannot re-execute with the hash seed ({exc})\n")
    return False
