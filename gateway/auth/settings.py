"""Authentication settings: issuer, audience, pinned algorithms, key sources, claim names, mTLS."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Self
from urllib.parse import urlsplit

from common.settings import SettingsError, optional_str, positive, section, str_list, typed

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
DEV_ISSUER = "llm-gateway-dev"
DEV_AUDIENCE = "llm-gateway"


def _non_negative(value: float, path: str) -> float:
    if value < 0:
        raise SettingsError(f"{path}: must be 0 or greater, got {value!r}")
    return value


@dataclass(frozen=True)
class JwksUrlSettings:
    """A JWKS URL of the identity provider, refreshed in the background.

    Keys are fresh for `refresh_interval_s` after the fetch that last listed them and stay usable
    for `stale_window_s` beyond that (provider down, or the key removed from the set); then they
    stop being accepted. An unknown `kid` schedules at most one extra fetch per
    `unknown_kid_cooldown_s`. `ca_file` trusts a private CA for the provider's https certificate.
    """

    url: str
    refresh_interval_s: float = 300.0
    stale_window_s: float = 3600.0
    unknown_kid_cooldown_s: float = 60.0
    fetch_timeout_s: float = 5.0
    retry_interval_s: float = 30.0
    max_response_bytes: int = 1024 * 1024
    allow_plain_http: bool = False
    ca_file: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], path: str = "auth.jwks") -> Self:
        d = section(data, path, _names(cls))
        url = optional_str(d, "url", path)
        if url is None:
            raise SettingsError(f"{path}.url: expected a string (the JWKS URL of the provider)")
        settings = cls(
            url=url,
            refresh_interval_s=positive(
                typed(d, "refresh_interval_s", path, float, cls.refresh_interval_s),
                f"{path}.refresh_interval_s",
            ),
            stale_window_s=_non_negative(
                typed(d, "stale_window_s", path, float, cls.stale_window_s),
                f"{path}.stale_window_s",
            ),
            unknown_kid_cooldown_s=positive(
                typed(d, "unknown_kid_cooldown_s", path, float, cls.unknown_kid_cooldown_s),
                f"{path}.unknown_kid_cooldown_s",
            ),
            fetch_timeout_s=positive(
                typed(d, "fetch_timeout_s", path, float, cls.fetch_timeout_s),
                f"{path}.fetch_timeout_s",
            ),
            retry_interval_s=positive(
                typed(d, "retry_interval_s", path, float, cls.retry_interval_s),
                f"{path}.retry_interval_s",
            ),
            max_response_bytes=positive(
                typed(d, "max_response_bytes", path, int, cls.max_response_bytes),
                f"{path}.max_response_bytes",
            ),
            allow_plain_http=typed(d, "allow_plain_http", path, bool, cls.allow_plain_http),
            ca_file=optional_str(d, "ca_file", path),
        )
        settings.check_url(path)
        return settings

    def check_url(self, path: str) -> None:
        """Refuse URLs that would leak keys' trust to a plain-text or credential-bearing request."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise SettingsError(f"{path}.url: expected an https:// URL with a host name")
        if parts.username or parts.password:
            raise SettingsError(f"{path}.url: must not carry credentials; remove the user:password")
        if parts.scheme == "http" and not (_is_loopback(parts.hostname) or self.allow_plain_http):
            raise SettingsError(
                f"{path}.url: plain http to a non-loopback host lets anyone on the path swap the "
                f"signing keys; use https, or set {path}.allow_plain_http: true explicitly"
            )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ClaimNames:
    """Names of the claims that carry the principal's attributes (regions name them differently).

    A name is looked up literally first; a dotted name (`realm_access.roles`) that is not a
    top-level claim is then followed through nested objects.
    """

    department: str = "department"
    roles: str = "roles"
    clearance: str = "clearance"
    purpose: str = "purpose"

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], path: str = "auth.claims") -> Self:
        d = section(data, path, _names(cls))
        defaults = cls()
        return cls(
            **{name: optional_str(d, name, path) or getattr(defaults, name) for name in _names(cls)}
        )


@dataclass(frozen=True)
class MtlsSettings:
    """Mutual TLS on the gateway's port.

    With `subject_claim` set, the client certificate's subject common name must equal that claim
    of the caller's token; a mismatch is PERMISSION_DENIED.
    """

    server_cert_file: str
    server_key_file: str
    client_ca_file: str
    require_client_cert: bool = True
    subject_claim: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], path: str = "auth.mtls") -> Self:
        d = section(data, path, _names(cls))
        files: dict[str, str] = {}
        for name in ("server_cert_file", "server_key_file", "client_ca_file"):
            value = optional_str(d, name, path)
            if value is None:
                raise SettingsError(f"{path}.{name}: expected a string (a PEM file path)")
            files[name] = value
        return cls(
            **files,
            require_client_cert=typed(d, "require_client_cert", path, bool, True),
            subject_claim=optional_str(d, "subject_claim", path),
        )


@dataclass(frozen=True)
class AuthSettings:
    """How callers are identified: which issuer, audience, algorithms and keys are trusted.

    Algorithms are pinned here and never taken from a token. HMAC (HS*) algorithms are only
    allowed when listed explicitly, never together with asymmetric ones, and only with
    `hmac_secret_file`. A `production` configuration refuses the development key.
    """

    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    pem_files: tuple[str, ...] = ()
    jwks_file: str | None = None
    jwks: JwksUrlSettings | None = None
    hmac_secret_file: str | None = None
    dev_key_file: str | None = None
    production: bool = False
    leeway_s: float = 30.0
    max_lifetime_s: float = 86_400.0
    max_token_bytes: int = 8192
    claims: ClaimNames = field(default_factory=ClaimNames)
    mtls: MtlsSettings | None = None
    cache_size: int = 10_000

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], path: str = "auth") -> Self:
        d = section(data, path, _names(cls))
        issuer = optional_str(d, "issuer", path)
        audience = optional_str(d, "audience", path)
        if issuer is None:
            raise SettingsError(f"{path}.issuer: expected a string (the exact `iss` of tokens)")
        if audience is None:
            raise SettingsError(f"{path}.audience: expected a string (the `aud` tokens must name)")
        jwks = _mapping(d, "jwks", path)
        claims = _mapping(d, "claims", path)
        mtls = _mapping(d, "mtls", path)
        try:
            return cls(
                issuer=issuer,
                audience=audience,
                algorithms=str_list(d, "algorithms", path),
                pem_files=str_list(d, "pem_files", path),
                jwks_file=optional_str(d, "jwks_file", path),
                jwks=None if jwks is None else JwksUrlSettings.from_mapping(jwks, f"{path}.jwks"),
                hmac_secret_file=optional_str(d, "hmac_secret_file", path),
                dev_key_file=optional_str(d, "dev_key_file", path),
                production=typed(d, "production", path, bool, False),
                leeway_s=_non_negative(
                    typed(d, "leeway_s", path, float, cls.leeway_s), f"{path}.leeway_s"
                ),
                max_lifetime_s=positive(
                    typed(d, "max_lifetime_s", path, float, cls.max_lifetime_s),
                    f"{path}.max_lifetime_s",
                ),
                max_token_bytes=typed(d, "max_token_bytes", path, int, cls.max_token_bytes),
                claims=ClaimNames.from_mapping(claims or {}, f"{path}.claims"),
                mtls=None if mtls is None else MtlsSettings.from_mapping(mtls, f"{path}.mtls"),
                cache_size=typed(d, "cache_size", path, int, cls.cache_size),
            )
        except _Problem as err:
            raise SettingsError(f"{path}.{err.key}: {err.problem}") from None

    def validate(self) -> None:
        """Check the combination of settings; raises SettingsError naming the key."""
        algs = set(self.algorithms)
        if not algs:
            raise _Problem("algorithms", "list at least one algorithm, e.g. [RS256, ES256]")
        unknown = sorted(algs - ASYMMETRIC_ALGORITHMS - HMAC_ALGORITHMS)
        if unknown:
            supported = ", ".join(sorted(ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS))
            raise _Problem("algorithms", f"unsupported {unknown}; supported: {supported}")
        hmac = algs & HMAC_ALGORITHMS
        if hmac and algs - HMAC_ALGORITHMS:
            raise _Problem(
                "algorithms",
                "HS* and asymmetric algorithms must not be trusted together (a public key could "
                "be used as an HMAC secret); pin one family",
            )
        if hmac and (self.pem_files or self.jwks_file or self.jwks or self.dev_key_file):
            raise _Problem("algorithms", "HS* algorithms take keys from hmac_secret_file only")
        if self.hmac_secret_file and not hmac:
            raise _Problem("hmac_secret_file", "set only when algorithms lists HS256/384/512")
        if not (
            self.pem_files
            or self.jwks_file
            or self.jwks
            or self.hmac_secret_file
            or self.dev_key_file
        ):
            raise _Problem(
                "pem_files", "no key source: set pem_files, jwks_file, jwks.url or dev_key_file"
            )
        if self.dev_key_file and "EdDSA" not in algs:
            raise _Problem("algorithms", "the development key is Ed25519: list EdDSA")
        if self.production and self.dev_key_file:
            raise _Problem(
                "dev_key_file",
                "a production configuration must not trust the development key; remove it "
                "and configure the identity provider's keys",
            )
        if self.production and self.issuer == DEV_ISSUER:
            raise _Problem("issuer", f"{DEV_ISSUER!r} is the development issuer")
        if not 256 <= self.max_token_bytes <= 65_536:
            raise _Problem("max_token_bytes", "must be between 256 and 65536")
        if self.cache_size < 0:
            raise _Problem("cache_size", "must be 0 (no cache) or greater")

    def egress_urls(self) -> tuple[str, ...]:
        """Addresses this component sends requests to (checked against the residency allowlist)."""
        return (self.jwks.url,) if self.jwks else ()


class _Problem(SettingsError):
    """A combination problem found by `validate`; `from_mapping` re-raises it under its path."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"auth.{key}: {problem}")
        self.key = key
        self.problem = problem


def _names(cls: type[object]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]


def _mapping(data: Mapping[str, object], key: str, path: str) -> Mapping[str, object] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise SettingsError(f"{path}.{key}: expected a mapping, got {type(value).__name__}")
    return value
