"""The deployment's audit secret: mounted key files (0440, fsGroup), derivation, one pseudonym."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import PRIVATE_KEY_FILE, load_or_create_signing_key
from audit.keyfile import KeyFileError, check_private
from audit.pseudonym import Pseudonymizer, content_hmac, derive_content_key, load_key
from gateway.request.auditing import AuditKeys

SECRET = bytes(range(32))


def write_secret(path: Path, mode: int, data: bytes = SECRET) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_a_kubernetes_secret_mount_is_accepted(tmp_path: Path) -> None:
    """Mode 0440 with the file's group among the process's groups (the pod's fsGroup)."""
    path = write_secret(tmp_path / "pseudonym.key", 0o440)
    assert load_key(path) == SECRET
    check_private(path, groups={path.stat().st_gid})


@pytest.mark.parametrize("mode", [0o444, 0o604, 0o602, 0o640 | 0o004])
def test_bits_for_others_are_refused(tmp_path: Path, mode: int) -> None:
    path = write_secret(tmp_path / "pseudonym.key", mode)
    with pytest.raises(KeyFileError, match="readable or writable by others"):
        load_key(path)


def test_group_bits_for_a_foreign_group_are_refused(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "pseudonym.key", 0o440)
    foreign = {path.stat().st_gid + 1}  # the process is not in the file's group
    with pytest.raises(KeyFileError, match="which this process is not in"):
        check_private(path, groups=foreign)
    check_private(path, groups={path.stat().st_gid})
    path.chmod(0o400)
    check_private(path, groups=foreign)  # owner only: no group question


def test_a_missing_or_short_secret_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"no such key file.*head -c 32 /dev/urandom"):
        load_key(tmp_path / "absent.key")
    short = write_secret(tmp_path / "short.key", 0o400, b"x" * 16)
    with pytest.raises(KeyFileError, match="16 bytes; need at least 32"):
        load_key(short)


def test_the_checkpoint_key_accepts_a_secret_mount(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = write_secret(tmp_path / PRIVATE_KEY_FILE, 0o440, pem)
    loaded = load_or_create_signing_key(tmp_path)
    assert loaded.public_key().public_bytes_raw() == key.public_key().public_bytes_raw()
    path.chmod(0o444)
    with pytest.raises(KeyFileError, match="by others"):
        load_or_create_signing_key(tmp_path)


def test_both_keys_come_from_the_one_secret(tmp_path: Path) -> None:
    """Pseudonym key = the secret (what `llm-audit erase --pseudonym-key` reads); content key
    derived with HKDF: different from the secret, the same wherever it is derived."""
    path = write_secret(tmp_path / "pseudonym.key", 0o440)
    keys = AuditKeys.load(path, tmp_path / "unused")
    again = AuditKeys.load(path, tmp_path / "other")
    assert keys.pseudonymize("alice") == Pseudonymizer(SECRET)("alice")
    assert keys.pseudonymize("alice") == again.pseudonymize("alice")
    assert keys.content_key == derive_content_key(SECRET) == again.content_key
    assert keys.content_key != SECRET and len(keys.content_key) == 32
    assert keys.content("prompt") == content_hmac(derive_content_key(SECRET), "prompt")
    assert not (tmp_path / "unused").exists()  # a configured secret is never generated


def test_without_a_key_file_development_generates_one(tmp_path: Path) -> None:
    keys = AuditKeys.load(None, tmp_path)
    generated = tmp_path / "audit-keys" / "pseudonym.key"
    assert os.stat(generated).st_mode & 0o777 == 0o600
    assert AuditKeys.load(None, tmp_path).pseudonymize("bob") == keys.pseudonymize("bob")
