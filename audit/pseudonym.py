"""Keyed HMAC-SHA256 pseudonyms for subjects and keyed hashes of prompt and answer text."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from audit.keyfile import KeyFileError as KeyFileError
from audit.keyfile import check_private

KEY_BYTES = 32
# The content-hash key is derived from the deployment's one secret (HKDF-SHA256, this label), so
# one mounted file serves both keys, and holding the content key does not give the pseudonym key.
CONTENT_KEY_INFO = b"llm-gateway audit content-hash key v1"


def load_or_create_key(path: str | os.PathLike[str]) -> bytes:
    """Read a secret key from `path`, generating it (mode 0600) on first use.

    The key lives beside the gateway's data, never in the audit store: whoever holds the store
    alone cannot recompute a pseudonym from a name. A file others can read is refused (see
    `audit.keyfile.check_private`), because the key is what keeps pseudonyms from being reversed
    by guessing subjects.
    """
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(KEY_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
    return load_key(p, min_bytes=16)


def load_key(path: str | os.PathLike[str], *, min_bytes: int = KEY_BYTES) -> bytes:
    """Read an existing secret key (a mounted secret): never created, at least `min_bytes`."""
    p = Path(path)
    if not p.is_file():
        raise KeyFileError(
            f"{p}: no such key file; create one with `head -c 32 /dev/urandom > {p.name}` "
            "and mount it (docs/deploy.md)"
        )
    check_private(p)
    key = p.read_bytes()
    if len(key) < min_bytes:
        raise KeyFileError(
            f"{p}: key is {len(key)} bytes; need at least {min_bytes} random bytes "
            f"(`head -c 32 /dev/urandom > {p.name}`)"
        )
    return key


def derive_content_key(secret: bytes) -> bytes:
    """The key of `content_hmac`, derived from the deployment secret (HKDF-SHA256)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=CONTENT_KEY_INFO
    ).derive(secret)


class Pseudonymizer:
    """Maps a subject (the JWT `sub`) to a stable pseudonym: hex HMAC-SHA256(key, subject).

    The same key gives the same pseudonym, so one person's requests can be grouped without
    naming them; destroying the key (or the store's link table, see audit/README.md) unlinks them.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("pseudonym key must be at least 16 bytes")
        self._key = key

    def __call__(self, subject: str) -> str:
        return hmac.new(self._key, b"subject\x00" + subject.encode(), hashlib.sha256).hexdigest()


def content_hmac(key: bytes, text: str) -> str:
    """Hex HMAC-SHA256 of prompt or answer text: proves what was sent without storing it."""
    hasher = content_hasher(key)
    hasher.update(text.encode())
    return hasher.hexdigest()


def content_hasher(key: bytes) -> hmac.HMAC:
    """`content_hmac` computed incrementally: `update` with the text's UTF-8 in parts."""
    return hmac.new(key, b"content\x00", hashlib.sha256)
