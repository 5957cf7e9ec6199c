"""Authentication of one call: the bearer token, and the client certificate when bound to it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import Counter

from gateway.auth.principal import Principal
from gateway.auth.settings import MtlsSettings
from gateway.auth.verifier import TokenRejected, TokenVerifier
from gateway.request.errors import GatewayError, PermissionDenied
from gateway.request.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
_REFUSALS_LOG = RateLimitedLog(log)

AUTH_DENIALS = Counter(
    "llmgw_auth_denials_total", "Calls refused by authentication, by reason", ["reason"]
)


class Authenticator:
    """Verifies `authorization: Bearer` credentials; with mTLS `subject_claim`, the certificate too.

    Doors call `authenticate` with what the call carried; a failure is raised as
    `Unauthenticated` / `PermissionDenied` and counted in `llmgw_auth_denials_total` by reason.
    """

    def __init__(self, verifier: TokenVerifier, *, mtls: MtlsSettings | None = None) -> None:
        self._verifier = verifier
        self._subject_claim = mtls.subject_claim if mtls else None

    @property
    def binds_certificates(self) -> bool:
        """Whether the caller's certificate must match the token (mTLS `subject_claim`)."""
        return self._subject_claim is not None

    def authenticate(
        self, authorization: Sequence[object], certificate_names: Sequence[str] = ()
    ) -> Principal:
        """The principal for these `authorization` values and client certificate CNs."""
        try:
            principal = self._verifier.verify(bearer_token(authorization))
            if self._subject_claim is not None:
                check_certificate(principal, certificate_names, self._subject_claim)
        except GatewayError as err:
            reason = err.reason if isinstance(err, TokenRejected) else "other"
            AUTH_DENIALS.labels(reason).inc()
            # Anyone can send junk tokens: one line per reason and minute, not one per call.
            _REFUSALS_LOG.log(logging.INFO, reason, "call refused: %s (%s)", reason, err.message)
            raise
        return principal


def bearer_token(values: Sequence[object]) -> str:
    """The token of exactly one `Bearer <token>` value."""
    if not values:
        raise TokenRejected(
            "missing", "no credentials: send metadata 'authorization: Bearer <token>'"
        )
    if len(values) > 1:
        raise TokenRejected("malformed", "send exactly one 'authorization' metadata entry")
    value = values[0]
    scheme, _, token = value.partition(" ") if isinstance(value, str) else ("", "", "")
    # RFC 7235: the scheme name is case-insensitive.
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenRejected("malformed", "the 'authorization' metadata must be 'Bearer <token>'")
    return token.strip()


def check_certificate(principal: Principal, names: Sequence[str], claim: str) -> None:
    """The client certificate's subject CN must equal the token's `claim`."""
    if not names:
        raise PermissionDenied(
            "this gateway binds tokens to client certificates: connect with the client "
            f"certificate whose subject CN equals your token's '{claim}' claim"
        )
    if principal.certificate_subject not in names:
        raise PermissionDenied(
            f"the client certificate's subject does not match the token's '{claim}' claim: "
            "use the certificate issued to this caller"
        )
