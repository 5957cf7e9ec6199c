"""Signed checkpoints: every chain head at one moment, signed with the store's Ed25519 key."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.chain import ChainHead
from audit.keyfile import check_private

PRIVATE_KEY_FILE = "checkpoint_ed25519.pem"
PUBLIC_KEY_FILE = "checkpoint_ed25519.pub.pem"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement "at `created_ns` these were the heads of all chains".

    `payload` is the signed canonical JSON; a copy kept by a witness outside the store makes a
    rewritten or truncated ledger detectable even by someone who also controls the store.
    A checkpoint signed after another names it in `prev` (its `link`), so one valid signature
    vouches for every checkpoint before it on an unbroken run of links (see `audit.verify`).
    """

    created_ns: int
    payload: str
    signature: str  # hex Ed25519 signature of payload
    public_key: str  # hex raw public key that signed it

    def heads(self) -> dict[str, ChainHead]:
        data = json.loads(self.payload)["heads"]
        return {s: ChainHead(int(h["chain_index"]), str(h["hash"])) for s, h in data.items()}

    @property
    def link(self) -> str:
        """What the next checkpoint names as its `prev`: SHA-256 of payload and signature, so a
        change to either breaks the link (the signature is hex, so the newline is unambiguous)."""
        return hashlib.sha256(f"{self.payload}\n{self.signature}".encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps(
            {
                "created_ns": self.created_ns,
                "payload": self.payload,
                "signature": self.signature,
                "public_key": self.public_key,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        d = json.loads(text)
        return cls(int(d["created_ns"]), d["payload"], d["signature"], d["public_key"])

    def signature_valid(self, key: Ed25519PublicKey) -> bool:
        try:
            key.verify(bytes.fromhex(self.signature), self.payload.encode())
        except (InvalidSignature, ValueError):
            return False
        return True


def sign_checkpoint(
    key: Ed25519PrivateKey,
    heads: dict[str, ChainHead],
    created_ns: int,
    after: Checkpoint | None = None,
) -> Checkpoint:
    """Sign `heads` at `created_ns`, linked (`prev`) to `after`, the ledger's newest checkpoint."""
    body: dict[str, object] = {
        "created_ns": created_ns,
        "heads": {
            s: {"chain_index": h.chain_index, "hash": h.hash} for s, h in sorted(heads.items())
        },
    }
    if after is not None:
        body["prev"] = after.link
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return Checkpoint(
        created_ns,
        payload,
        key.sign(payload.encode()).hex(),
        raw_public_key(key.public_key()).hex(),
    )


def sign_retention(
    key: Ed25519PrivateKey, statement: dict[str, object], created_ns: int
) -> Checkpoint:
    """A signed retention statement: records pruned (`kind` "prune") or text expired ("text").

    Stored apart from the head checkpoints (table `retention_checkpoints`); `audit.retention_check`
    reads the statement back and verify checks the chain against it.
    """
    payload = json.dumps(
        {**statement, "created_ns": created_ns}, sort_keys=True, separators=(",", ":")
    )
    return Checkpoint(
        created_ns,
        payload,
        key.sign(payload.encode()).hex(),
        raw_public_key(key.public_key()).hex(),
    )


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_or_create_signing_key(keys_dir: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The store's checkpoint key in `keys_dir`, created (0600, .pub.pem beside it) if absent."""
    d = Path(keys_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / PRIVATE_KEY_FILE
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        (d / PUBLIC_KEY_FILE).write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    check_private(path)  # mounted secrets: 0440 with the pod's fsGroup is fine
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key; move it away to generate a new one")
    return loaded


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    loaded = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(loaded, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key (expected the store's .pub.pem)")
    return loaded
