"""The `TokenVerifier` port and its JWT implementation, with a cache of verified tokens."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import jwt
from prometheus_client import Counter

from gateway.auth.jwks import JwksUrlKeys
from gateway.auth.keys import CombinedKeys, KeySource, VerificationKey, load_static_keys
from gateway.auth.principal import Principal
from gateway.auth.settings import AuthSettings
from gateway.request.errors import Unauthenticated, error_info

VERIFICATIONS = Counter(
    "llmgw_auth_verifications_total", "Accepted tokens by how they were checked", ["path"]
)
_VERIFIED = VERIFICATIONS.labels("verified")
_CACHED = VERIFICATIONS.labels("cached")

# Compact JWS: three base64url segments. Checked before any decoding so garbage costs nothing.
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_REQUIRED = ("exp", "iat", "iss", "aud")


class TokenRejected(Unauthenticated):
    """A token failed a check; `reason` is a short metric label naming the check.

    The client gets `ErrorInfo{reason: "auth.<reason>"}` so that it can tell, in any language,
    an expired token (fetch a new one) from a wrong audience (fix the configuration).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, details=[error_info(f"auth.{reason}")])
        self.reason = reason


class TokenVerifier(Protocol):
    """Turns a bearer token into a verified `Principal`.

    `verify` raises `Unauthenticated` (a `TokenRejected` with a `reason`) whose message says
    which check failed and never contains the token. It must not block the event loop.
    """

    def verify(self, token: str) -> Principal:
        """The principal the token proves, or raise `Unauthenticated`."""
        ...


class JwtVerifier:
    """Verifies JWTs against pinned algorithms and trusted keys; caches accepted tokens.

    Checks, in order: size, compact form, header (alg in the pinned list, no `crit`), key by
    `kid`, signature, required `exp`/`iat`/`iss`/`aud`, exact issuer, audience, `nbf`, leeway,
    lifetime (`exp - iat`), then the principal's claims. An accepted token is cached (bounded
    LRU keyed by its SHA-256) until it expires or its key stops being trusted.
    """

    def __init__(self, settings: AuthSettings, keys: KeySource) -> None:
        self._settings = settings
        self._keys = keys
        self._algorithms = frozenset(settings.algorithms)
        self._cache: OrderedDict[bytes, tuple[Principal, VerificationKey]] = OrderedDict()
        self._lock = threading.Lock()
        self._subject_claim = settings.mtls.subject_claim if settings.mtls else None

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> JwtVerifier:
        """A verifier over the key sources the settings name; call `start()` before use."""
        sources: list[KeySource] = [load_static_keys(settings)]
        if settings.jwks is not None:
            sources.append(JwksUrlKeys(settings.jwks, settings.algorithms))
        return cls(settings, sources[0] if len(sources) == 1 else CombinedKeys(sources))

    async def start(self) -> None:
        """Fetch remote keys and start their background refresh."""
        await self._keys.start()

    async def close(self) -> None:
        """Stop background key refresh."""
        await self._keys.close()

    def verify(self, token: str) -> Principal:
        if len(token) > self._settings.max_token_bytes:
            raise TokenRejected(
                "too_large",
                f"token longer than {self._settings.max_token_bytes} bytes: send the access "
                "token alone, without extra claims or whitespace",
            )
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cache_get(digest)
        if cached is not None:
            _CACHED.inc()
            return cached
        principal, key = self._verify_uncached(token)
        self._cache_put(digest, principal, key)
        _VERIFIED.inc()
        return principal

    def _cache_get(self, digest: bytes) -> Principal | None:
        with self._lock:
            entry = self._cache.get(digest)
            if entry is None:
                return None
            principal, key = entry
            if time.time() < principal.expires_at and self._keys.is_current(key):
                self._cache.move_to_end(digest)
                return principal
            del self._cache[digest]
            return None

    def _cache_put(self, digest: bytes, principal: Principal, key: VerificationKey) -> None:
        if self._settings.cache_size == 0:
            return
        with self._lock:
            self._cache[digest] = (principal, key)
            if len(self._cache) > self._settings.cache_size:
                self._cache.popitem(last=False)

    def _verify_uncached(self, token: str) -> tuple[Principal, VerificationKey]:
        if not _COMPACT.fullmatch(token):
            raise TokenRejected(
                "malformed", "token is not a compact JWT (three base64url parts separated by '.')"
            )
        header = _decode_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise TokenRejected(
                "algorithm",
                f"token algorithm is not accepted; this gateway accepts only "
                f"{', '.join(sorted(self._algorithms))}",
            )
        if "crit" in header:
            raise TokenRejected(
                "crit",
                "token has critical header extensions ('crit') this gateway does not support",
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("malformed", "token header 'kid' must be a string")
        keys = self._keys.candidates(kid, alg)
        if not keys:
            raise TokenRejected(
                "unknown_key",
                "token is signed with a key this gateway does not know: if the identity "
                "provider rotated its keys, retry in a minute; otherwise check the issuer",
            )
        claims, key = self._check_signature_and_claims(token, alg, keys)
        return self._principal(claims), key

    def _check_signature_and_claims(
        self, token: str, alg: str, keys: Sequence[VerificationKey]
    ) -> tuple[dict[str, Any], VerificationKey]:
        s = self._settings
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key.jwk,
                    algorithms=[alg],
                    audience=s.audience,
                    issuer=s.issuer,
                    leeway=s.leeway_s,
                    options={"require": list(_REQUIRED), "strict_aud": False},
                )
            except jwt.InvalidSignatureError:
                continue  # another key of the same kid/algorithm may have signed it
            except jwt.PyJWTError as err:
                raise _rejection(err) from None
            except (OverflowError, ValueError, TypeError):
                # pyjwt's int() of a time claim: `1e400` is infinity, which int() refuses.
                raise TokenRejected(
                    "malformed", "token time claims must be finite numbers (RFC 7519)"
                ) from None
            _check_numeric_dates(claims)
            # pyjwt compares `iss` exactly for a str issuer; checked again because a prefix or
            # suffix match here would let another realm of the same provider in.
            if claims.get("iss") != s.issuer:
                raise TokenRejected("issuer", "token issuer is not the one this gateway trusts")
            lifetime = float(claims["exp"]) - float(claims["iat"])
            if lifetime > s.max_lifetime_s:
                raise TokenRejected(
                    "lifetime",
                    f"token lifetime (exp - iat) is over the {s.max_lifetime_s:.0f} s allowed: "
                    "request a shorter-lived token",
                )
            return claims, key
        raise TokenRejected(
            "signature", "token signature does not verify with the trusted keys for its issuer"
        )

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        names = self._settings.claims
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise TokenRejected("claims", "token has no 'sub' (subject) claim")
        department = _claim(claims, names.department)
        if not isinstance(department, str) or not department:
            raise TokenRejected(
                "claims",
                f"token has no '{names.department}' claim naming the caller's department: "
                "ask the identity provider to include it",
            )
        binding: str | None = None
        if self._subject_claim is not None:
            value = _claim(claims, self._subject_claim)
            if not isinstance(value, str) or not value:
                raise TokenRejected(
                    "claims",
                    f"token has no '{self._subject_claim}' claim to match the client certificate",
                )
            binding = value
        jti = claims.get("jti")
        return Principal(
            subject=subject,
            department=department,
            roles=_roles(claims, names.roles),
            clearance=_optional_text(claims, names.clearance),
            purpose=_optional_text(claims, names.purpose),
            token_id=jti if isinstance(jti, str) else None,
            issuer=str(claims["iss"]),
            expires_at=float(claims["exp"]),
            certificate_subject=binding,
        )


_TIME_CLAIMS = ("exp", "iat", "nbf")


def _check_numeric_dates(claims: Mapping[str, Any]) -> None:
    """RFC 7519 NumericDate: a JSON number. pyjwt accepts `"1700000000"` (it calls int())."""
    for name in _TIME_CLAIMS:
        value = claims.get(name)
        if value is None and name == "nbf":
            continue
        if not (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ):
            raise TokenRejected(
                "malformed",
                f"token claim '{name}' must be a number of seconds since 1970 (RFC 7519 "
                "NumericDate), not a string",
            )


def _decode_header(token: str) -> dict[str, Any]:
    segment = token.split(".", 1)[0]
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        header = json.loads(raw)
    except (binascii.Error, ValueError):
        raise TokenRejected("malformed", "token header is not base64url-encoded JSON") from None
    if not isinstance(header, dict):
        raise TokenRejected("malformed", "token header is not a JSON object")
    return header


_MISSING = object()


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by literal name, else by dotted path through nested objects."""
    value = claims.get(name, _MISSING)
    if value is not _MISSING:
        return value
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _roles(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    value = _claim(claims, name)
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(r for r in re.split(r"[\s,]+", value) if r)
    if isinstance(value, list) and all(isinstance(r, str) for r in value):
        return frozenset(r for r in value if r)
    raise TokenRejected("claims", f"token claim '{name}' must be a list of strings or a string")


def _optional_text(claims: Mapping[str, Any], name: str) -> str | None:
    value = _claim(claims, name)
    if value is None:
        return None
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    raise TokenRejected("claims", f"token claim '{name}' must be a string")


def _rejection(err: jwt.PyJWTError) -> TokenRejected:
    """The public rejection for a pyjwt error; pyjwt's own messages are not shown to callers."""
    if isinstance(err, jwt.ExpiredSignatureError):
        return TokenRejected("expired", "token has expired: get a new token")
    if isinstance(err, jwt.ImmatureSignatureError):
        return TokenRejected(
            "not_yet_valid", "token is not valid yet (nbf or iat in the future): check clocks"
        )
    if isinstance(err, jwt.MissingRequiredClaimError):
        return TokenRejected(
            "missing_claim", f"token has no '{err.claim}' claim, which is required"
        )
    if isinstance(err, jwt.InvalidIssuerError):
        return TokenRejected("issuer", "token issuer is not the one this gateway trusts")
    if isinstance(err, jwt.InvalidAudienceError):
        return TokenRejected("audience", "token is not meant for this gateway (audience)")
    if isinstance(err, jwt.InvalidAlgorithmError):
        return TokenRejected("algorithm", "token algorithm does not match its key")
    return TokenRejected("malformed", "token is malformed (bad encoding or claim types)")
