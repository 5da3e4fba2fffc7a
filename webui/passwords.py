"""Password hashing with scrypt (stdlib ``hashlib.scrypt``): memory-hard, no dependency.

Stored as ``scrypt$n$r$p$salt_hex$hash_hex`` so parameters can be raised later and old
hashes still verify. n=2**14, r=8 costs 16 MiB and ~50 ms per check on a Raspberry Pi 4
class CPU: slow for a guesser, fine for a login.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

N, R, P = 2**14, 8, 1
MIN_LENGTH = 10


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, maxmem=64 * 2**20)
    return f"scrypt${N}${R}${P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 * 2**20,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def password_problem(password: str, username: str = "") -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"use at least {MIN_LENGTH} characters"
    if username and username.lower() in password.lower():
        return "the password must not contain the user name"
    if len(set(password)) < 4:
        return "too few different characters"
    return None
