"""The development signing key: generated locally on first use, trusted only by the dev stack."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from common.settings import SettingsError
from gateway.auth.settings import DEV_AUDIENCE, DEV_ISSUER, AuthSettings

DEV_KEY_NAME = "auth/dev-signing-key.pem"


def dev_key_path(data_dir: str | Path) -> Path:
    """Where the development key of a data directory lives."""
    return Path(data_dir) / DEV_KEY_NAME


def ensure_dev_key(data_dir: str | Path) -> Path:
    """The development key file, created (Ed25519, mode 0600) if it does not exist yet."""
    path = dev_key_path(data_dir)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Written under a unique name with 0600 from the start, then linked into place: two
    # processes racing here end up sharing one key, and the key is never world-readable.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _load_private_key(path: Path) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as err:
        raise SettingsError(f"{path}: cannot load the development key ({err})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SettingsError(f"{path}: the development key must be an Ed25519 private key")
    return key


def load_dev_public_key(path: Path) -> ed25519.Ed25519PublicKey:
    """The public half of the development key stored at `path`."""
    return _load_private_key(path).public_key()


def dev_auth_settings(data_dir: str | Path) -> AuthSettings:
    """Settings that trust only the development key of `data_dir` (created if missing)."""
    return AuthSettings(
        issuer=DEV_ISSUER,
        audience=DEV_AUDIENCE,
        algorithms=("EdDSA",),
        dev_key_file=str(ensure_dev_key(data_dir)),
    )


def mint_dev_token(
    data_dir: str | Path,
    *,
    department: str,
    subject: str,
    roles: tuple[str, ...] | list[str] = (),
    clearance: str | None = None,
    purpose: str | None = None,
    ttl_s: int = 3600,
) -> str:
    """A development token for `subject` in `department`, signed with the development key."""
    if ttl_s <= 0:
        raise ValueError("ttl_s must be greater than 0")
    key = _load_private_key(ensure_dev_key(data_dir))
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "sub": subject,
        "department": department,
        "roles": list(roles),
        "iat": now,
        "exp": now + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    if clearance is not None:
        claims["clearance"] = clearance
    if purpose is not None:
        claims["purpose"] = purpose
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"typ": "JWT"})
