"""Authentication settings: issuer, audience, pinned algorithms, key sources, claim names, mTLS."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from common.settings import Invalid, non_empty, non_negative, positive, setting

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
DEV_ISSUER = "llm-gateway-dev"
DEV_AUDIENCE = "llm-gateway"


@dataclass(frozen=True)
class JwksUrlSettings:
    """A JWKS URL of the identity provider, refreshed in the background.

    Keys are fresh for `refresh_interval_s` after the fetch that last listed them and stay usable
    for `stale_window_s` beyond that (provider down, or the key removed from the set); then they
    stop being accepted.
    """

    url: str = setting(
        doc="the JWKS URL of the provider (https)",
        expect="a non-empty string",
        check=non_empty,
    )
    refresh_interval_s: float = setting(
        300.0, doc="keys are fresh this long after the fetch that listed them", check=positive
    )
    stale_window_s: float = setting(
        3600.0,
        doc="keys stay usable this long after they stop being fresh",
        check=non_negative,
    )
    unknown_kid_cooldown_s: float = setting(
        60.0, doc="an unknown kid schedules at most one extra fetch this often", check=positive
    )
    fetch_timeout_s: float = setting(5.0, doc="the most one fetch may take", check=positive)
    retry_interval_s: float = setting(30.0, doc="wait after a failed fetch", check=positive)
    max_response_bytes: int = setting(
        1024 * 1024, doc="largest JWKS response accepted", check=positive
    )
    allow_plain_http: bool = setting(
        False, doc="allow http:// to a non-loopback host (lets anyone on the path swap keys)"
    )
    ca_file: str | None = setting(
        None, doc="a private CA trusted for the provider's https certificate (PEM)"
    )

    def check(self) -> None:
        """Refuse URLs that would leak keys' trust to a plain-text or credential-bearing request."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise Invalid("url", "expected an https:// URL with a host name")
        if parts.username or parts.password:
            raise Invalid("url", "must not carry credentials; remove the user:password")
        if parts.scheme == "http" and not (_is_loopback(parts.hostname) or self.allow_plain_http):
            raise Invalid(
                "url",
                "plain http to a non-loopback host lets anyone on the path swap the signing keys; "
                "use https, or set {path}.allow_plain_http: true explicitly",
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

    department: str = setting("department", doc="claim naming the caller's department")
    roles: str = setting("roles", doc="claim listing the caller's roles")
    clearance: str = setting("clearance", doc="claim holding the caller's clearance")
    purpose: str = setting("purpose", doc="claim holding the purpose of use")


_PEM = "a string (a PEM file path)"


@dataclass(frozen=True)
class MtlsSettings:
    """Mutual TLS on the gateway's port."""

    server_cert_file: str = setting(doc="the gateway's certificate (PEM)", expect=_PEM)
    server_key_file: str = setting(doc="the private key of server_cert_file (PEM)", expect=_PEM)
    client_ca_file: str = setting(doc="only client certificates from this CA get in", expect=_PEM)
    require_client_cert: bool = setting(True, doc="refuse callers without a client certificate")
    subject_claim: str | None = setting(
        None,
        doc="the client certificate's subject CN must equal this claim of the token "
        "(PERMISSION_DENIED otherwise)",
    )


@dataclass(frozen=True)
class AuthSettings:
    """How callers are identified: which issuer, audience, algorithms and keys are trusted.

    Algorithms are pinned here and never taken from a token. HMAC (HS*) algorithms are only
    allowed when listed explicitly, never together with asymmetric ones, and only with
    `hmac_secret_file`. A `production` configuration refuses the development key.
    """

    issuer: str = setting(
        doc="the exact `iss` of tokens",
        expect="a non-empty string",
        check=non_empty,
    )
    audience: str = setting(
        doc="the `aud` tokens must name",
        expect="a non-empty string",
        check=non_empty,
    )
    algorithms: tuple[str, ...] = setting(
        doc="signature algorithms trusted, e.g. [RS256, ES256]; never taken from a token"
    )
    pem_files: tuple[str, ...] = setting((), doc="public keys of the provider (PEM files)")
    jwks_file: str | None = setting(None, doc="the provider's keys as a JWKS file")
    jwks: JwksUrlSettings | None = setting(None, doc="fetch the provider's keys from a JWKS URL")
    hmac_secret_file: str | None = setting(
        None, doc="shared secret for HS256/384/512 (only when algorithms lists them)"
    )
    dev_key_file: str | None = setting(None, doc="the development key (EdDSA; never production)")
    production: bool = setting(False, doc="refuse development keys and issuer")
    leeway_s: float = setting(30.0, doc="clock skew allowed on exp/nbf/iat", check=non_negative)
    max_lifetime_s: float = setting(
        86_400.0, doc="longest token lifetime (exp - iat) accepted", check=positive
    )
    max_token_bytes: int = setting(8192, doc="largest token accepted, 256 to 65536")
    claims: ClaimNames = setting(factory=ClaimNames, doc="claim names")
    mtls: MtlsSettings | None = setting(None, doc="mutual TLS on the gateway's port")
    cache_size: int = setting(10_000, doc="verified tokens cached (0: no cache)")

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Check the combination of settings; raises `Invalid` naming the key."""
        algs = set(self.algorithms)
        if not algs:
            raise Invalid("algorithms", "list at least one algorithm, e.g. [RS256, ES256]")
        unknown = sorted(algs - ASYMMETRIC_ALGORITHMS - HMAC_ALGORITHMS)
        if unknown:
            supported = ", ".join(sorted(ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS))
            raise Invalid("algorithms", f"unsupported {unknown}; supported: {supported}")
        hmac = algs & HMAC_ALGORITHMS
        if hmac and algs - HMAC_ALGORITHMS:
            raise Invalid(
                "algorithms",
                "HS* and asymmetric algorithms must not be trusted together (a public key could "
                "be used as an HMAC secret); pin one family",
            )
        if hmac and (self.pem_files or self.jwks_file or self.jwks or self.dev_key_file):
            raise Invalid("algorithms", "HS* algorithms take keys from hmac_secret_file only")
        if self.hmac_secret_file and not hmac:
            raise Invalid("hmac_secret_file", "set only when algorithms lists HS256/384/512")
        if not (
            self.pem_files
            or self.jwks_file
            or self.jwks
            or self.hmac_secret_file
            or self.dev_key_file
        ):
            raise Invalid(
                "pem_files", "no key source: set pem_files, jwks_file, jwks.url or dev_key_file"
            )
        if self.dev_key_file and "EdDSA" not in algs:
            raise Invalid("algorithms", "the development key is Ed25519: list EdDSA")
        if self.production and self.dev_key_file:
            raise Invalid(
                "dev_key_file",
                "a production configuration must not trust the development key; remove it "
                "and configure the identity provider's keys",
            )
        if self.production and self.issuer == DEV_ISSUER:
            raise Invalid("issuer", f"{DEV_ISSUER!r} is the development issuer")
        if not 256 <= self.max_token_bytes <= 65_536:
            raise Invalid("max_token_bytes", "must be between 256 and 65536")
        if self.cache_size < 0:
            raise Invalid("cache_size", "must be 0 (no cache) or greater")

    def egress_urls(self) -> tuple[str, ...]:
        """Addresses this component sends requests to (checked against the residency allowlist)."""
        return (self.jwks.url,) if self.jwks else ()
