"""Verification keys: pinned PEM files, JWKS documents, HMAC secrets and the development key."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from common.settings import SettingsError
from gateway.auth.settings import AuthSettings

log = logging.getLogger(__name__)

# RFC 7638 members: the public part of each key type; anything else (private members, `x5c`,
# vendor extensions) is dropped before a key is built, so a JWKS can never smuggle in a
# private key or an unexpected parameter.
_PUBLIC_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x"), "oct": ("k",)}
MAX_JWKS_KEYS = 100


class KeyLoadError(SettingsError):
    """A key file or JWKS document cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, slots=True, eq=False)
class VerificationKey:
    """One trusted key bound to exactly one algorithm.

    `kid` None means the key was pinned without an id (a PEM file): it is tried for any token
    of its algorithm. `fingerprint` identifies the key across JWKS refreshes.
    """

    kid: str | None
    algorithm: str
    jwk: jwt.PyJWK
    fingerprint: str
    source: str


class KeySource(Protocol):
    """Where the verifier finds keys; implementations must answer without blocking."""

    def candidates(self, kid: str | None, algorithm: str) -> Sequence[VerificationKey]:
        """Usable keys for a token with this `kid` and `alg` (empty: unknown key)."""
        ...

    def is_current(self, key: VerificationKey) -> bool:
        """Whether `key` is still trusted (used to keep cached verifications honest)."""
        ...

    async def start(self) -> None:
        """Load or start refreshing keys."""
        ...

    async def close(self) -> None:
        """Stop background work."""
        ...


class KeySet:
    """An immutable index of keys by (kid, algorithm)."""

    def __init__(self, keys: Iterable[VerificationKey]) -> None:
        self.keys = tuple(keys)
        self._by_kid: dict[tuple[str, str], list[VerificationKey]] = {}
        self._by_alg: dict[str, list[VerificationKey]] = {}
        self._pinned: dict[str, list[VerificationKey]] = {}
        for key in self.keys:
            self._by_alg.setdefault(key.algorithm, []).append(key)
            if key.kid is None:
                self._pinned.setdefault(key.algorithm, []).append(key)
            else:
                self._by_kid.setdefault((key.kid, key.algorithm), []).append(key)
        self.kids = frozenset(k.kid for k in self.keys if k.kid is not None)
        self.fingerprints = frozenset(k.fingerprint for k in self.keys)

    def candidates(self, kid: str | None, algorithm: str) -> list[VerificationKey]:
        if kid is None:
            return self._by_alg.get(algorithm, [])
        return self._by_kid.get((kid, algorithm), []) + self._pinned.get(algorithm, [])


class StaticKeys:
    """Keys loaded once from files: for air-gapped sites and the development stack."""

    def __init__(self, keys: Iterable[VerificationKey]) -> None:
        self._set = KeySet(keys)

    @property
    def keys(self) -> tuple[VerificationKey, ...]:
        return self._set.keys

    def candidates(self, kid: str | None, algorithm: str) -> Sequence[VerificationKey]:
        return self._set.candidates(kid, algorithm)

    def is_current(self, key: VerificationKey) -> bool:
        return key.fingerprint in self._set.fingerprints

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class CombinedKeys:
    """Several key sources consulted together (pinned files beside a JWKS URL)."""

    def __init__(self, sources: Sequence[KeySource]) -> None:
        self._sources = tuple(sources)

    def candidates(self, kid: str | None, algorithm: str) -> Sequence[VerificationKey]:
        found: list[VerificationKey] = []
        for source in self._sources:
            found.extend(source.candidates(kid, algorithm))
        return found

    def is_current(self, key: VerificationKey) -> bool:
        return any(source.is_current(key) for source in self._sources)

    async def start(self) -> None:
        for source in self._sources:
            await source.start()

    async def close(self) -> None:
        for source in self._sources:
            await source.close()


def keys_from_jwk(
    data: Mapping[str, Any], algorithms: Iterable[str], source: str
) -> list[VerificationKey]:
    """The keys one JWK yields for the pinned `algorithms` (one per algorithm it fits).

    A JWK that declares `alg` is bound to it; `use` other than `sig` is skipped. Keys too
    short for their algorithm are refused, as are curves that do not match the algorithm.
    """
    kty = data.get("kty")
    if not isinstance(kty, str) or kty not in _PUBLIC_MEMBERS:
        return []
    if data.get("use", "sig") != "sig":
        return []
    public: dict[str, Any] = {"kty": kty}
    for member in _PUBLIC_MEMBERS[kty]:
        if not isinstance(data.get(member), str):
            return []
        public[member] = data[member]
    kid = data.get("kid")
    kid = kid if isinstance(kid, str) and kid else None
    declared = data.get("alg")
    canonical = json.dumps(public, sort_keys=True, separators=(",", ":"))
    keys = []
    for algorithm in algorithms:
        if isinstance(declared, str) and declared != algorithm:
            continue
        try:
            pyjwk = jwt.PyJWK(dict(public), algorithm=algorithm)
            pyjwk.Algorithm.prepare_key(pyjwk.key)
            weak = pyjwk.Algorithm.check_key_length(pyjwk.key)
        except (jwt.PyJWTError, ValueError, TypeError):
            continue  # this key type does not fit this algorithm
        if weak:
            log.warning("skipping a key from %s for %s: %s", source, algorithm, weak)
            continue
        digest = hashlib.sha256(f"{algorithm}|{kid}|{canonical}".encode()).hexdigest()
        keys.append(VerificationKey(kid, algorithm, pyjwk, digest, source))
    return keys


def keys_from_jwks(
    document: object, algorithms: Iterable[str], source: str
) -> list[VerificationKey]:
    """All usable keys of a JWKS document (`{"keys": [...]}`); raises KeyLoadError if malformed."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise KeyLoadError(f"{source}: expected a JWKS document, a JSON object with a 'keys' list")
    entries = document["keys"]
    if len(entries) > MAX_JWKS_KEYS:
        raise KeyLoadError(f"{source}: {len(entries)} keys, more than the {MAX_JWKS_KEYS} accepted")
    pinned = tuple(algorithms)
    keys = []
    for entry in entries:
        if isinstance(entry, Mapping):
            keys.extend(keys_from_jwk(entry, pinned, source))
    return keys


def public_key_to_jwk(public_key: object) -> dict[str, Any]:
    """The JWK form of a cryptography public key (RSA, EC or Ed25519/Ed448)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return RSAAlgorithm.to_jwk(public_key, as_dict=True)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return ECAlgorithm.to_jwk(public_key, as_dict=True)
    if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return OKPAlgorithm.to_jwk(public_key, as_dict=True)
    raise KeyLoadError(f"unsupported public key type {type(public_key).__name__}")


def load_pem_public_key(path: str) -> object:
    """A public key from a PEM file holding a public key or an X.509 certificate."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise KeyLoadError(f"{path}: cannot read the key file ({err.strerror})") from None
    if b"PRIVATE KEY" in data:
        raise KeyLoadError(f"{path}: holds a private key; pin the identity provider's public key")
    try:
        if b"BEGIN CERTIFICATE" in data:
            return x509.load_pem_x509_certificate(data).public_key()
        return serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyLoadError(f"{path}: not a PEM public key or certificate") from None


def load_static_keys(settings: AuthSettings) -> StaticKeys:
    """Keys from `pem_files`, `jwks_file`, `hmac_secret_file` and `dev_key_file`."""
    algorithms = settings.algorithms
    keys: list[VerificationKey] = []

    def add(found: list[VerificationKey], source: str) -> None:
        if not found:
            raise KeyLoadError(f"{source}: no key usable with the pinned algorithms {algorithms}")
        keys.extend(found)

    for path in settings.pem_files:
        add(keys_from_jwk(public_key_to_jwk(load_pem_public_key(path)), algorithms, path), path)
    if settings.jwks_file:
        try:
            document = json.loads(Path(settings.jwks_file).read_bytes())
        except (OSError, ValueError) as err:
            raise KeyLoadError(
                f"{settings.jwks_file}: cannot read a JWKS document ({err})"
            ) from None
        add(keys_from_jwks(document, algorithms, settings.jwks_file), settings.jwks_file)
    if settings.hmac_secret_file:
        try:
            secret = Path(settings.hmac_secret_file).read_bytes().rstrip(b"\r\n")
        except OSError as err:
            raise KeyLoadError(
                f"{settings.hmac_secret_file}: cannot read ({err.strerror})"
            ) from None
        jwk = json.loads(jwt.algorithms.HMACAlgorithm.to_jwk(secret))
        add(keys_from_jwk(jwk, algorithms, settings.hmac_secret_file), settings.hmac_secret_file)
    if settings.dev_key_file:
        from gateway.auth.devkeys import load_dev_public_key

        public = load_dev_public_key(Path(settings.dev_key_file))
        add(keys_from_jwk(public_key_to_jwk(public), algorithms, "dev_key_file"), "dev_key_file")
    return StaticKeys(keys)
