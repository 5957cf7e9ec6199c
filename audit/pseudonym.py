"""Keyed HMAC-SHA256 pseudonyms for subjects and keyed hashes of prompt and answer text."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

KEY_BYTES = 32


class KeyFileError(Exception):
    """A key file is missing, unreadable, too short, or readable by others."""


def load_or_create_key(path: str | os.PathLike[str]) -> bytes:
    """Read a secret key from `path`, generating it (mode 0600) on first use.

    The key lives beside the gateway's data, never in the audit store: whoever holds the store
    alone cannot recompute a pseudonym from a name. A file readable by group or others is refused,
    because the key is what keeps pseudonyms from being reversed by guessing subjects.
    """
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(KEY_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"{p}: key file has mode {mode:o}; run `chmod 600 {p}` so only its owner can read it"
        )
    key = p.read_bytes()
    if len(key) < 16:
        raise KeyFileError(
            f"{p}: key is {len(key)} bytes; need at least 16 (delete it to regenerate)"
        )
    return key


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
