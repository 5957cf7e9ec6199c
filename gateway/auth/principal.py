"""The verified identity of a caller, carried by the call context along the request path."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller whose token has been verified.

    Only the authenticator creates these; everything after it (policy, limits,
    routing, audit) trusts the fields as verified facts.
    """

    subject: str
    department: str
    roles: frozenset[str] = field(default_factory=frozenset)
    clearance: str | None = None
    purpose: str | None = None
    token_id: str | None = None
    issuer: str = ""
    expires_at: float = 0.0
    # The token claim that mTLS requires the client certificate's subject CN to equal (set only
    # when `auth.mtls.subject_claim` is configured).
    certificate_subject: str | None = None
