"""Ed25519 signing keys of the MSP, and signature checks for the appliance.

A key is named by its key id, the hex SHA-256 of the raw 32-byte public key: anyone holding
the public key can recompute it, so a metadata file cannot claim a key id that does not
belong to the key it lists. Private keys live as unencrypted PKCS8 PEM files, mode 0600, in
the MSP's key directory (protecting that directory is the MSP's job, as for an SSH key).
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from appliance.atomic import write_atomic
from appliance.sync.canonical import sha256_hex
from appliance.sync.errors import SyncError

PUBLIC_KEY_BYTES = 32


def keyid_for(public_raw: bytes) -> str:
    """The key id of a raw Ed25519 public key."""
    return sha256_hex(public_raw)


class SigningKey:
    """A private Ed25519 key that signs root metadata or bundles."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_raw: bytes = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.keyid: str = keyid_for(self.public_raw)
        self.public_b64: str = base64.b64encode(self.public_raw).decode("ascii")

    def sign(self, data: bytes) -> str:
        """The base64 signature of ``data``."""
        return base64.b64encode(self._private.sign(data)).decode("ascii")

    def save(self, path: Path) -> None:
        """Write the key as PKCS8 PEM, readable by its owner only."""
        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(Path(path), pem, mode=0o600)

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """Read a key written by ``save``; raises SyncError saying what is wrong with the file."""
        path = Path(path)
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise SyncError(f"{path}: cannot read signing key: {exc.strerror or exc}") from exc
        try:
            private = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise SyncError(f"{path}: not an unencrypted PKCS8 PEM private key: {exc}") from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise SyncError(f"{path}: not an Ed25519 key ({type(private).__name__})")
        return cls(private)

    def __repr__(self) -> str:  # never print key material
        return f"SigningKey(keyid={self.keyid[:16]}...)"


def generate_key() -> SigningKey:
    return SigningKey(Ed25519PrivateKey.generate())


def decode_public_key(public_b64: object) -> bytes | None:
    """The raw public key from its base64 form, or None if it is not 32 bytes of base64."""
    if not isinstance(public_b64, str):
        return None
    try:
        raw = base64.b64decode(public_b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == PUBLIC_KEY_BYTES else None


def signature_valid(public_raw: bytes, data: bytes, sig_b64: object) -> bool:
    """Whether ``sig_b64`` is a valid Ed25519 signature of ``data``; never raises."""
    if not isinstance(sig_b64, str):
        return False
    try:
        sig = base64.b64decode(sig_b64, validate=True)
        Ed25519PublicKey.from_public_bytes(public_raw).verify(sig, data)
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True
