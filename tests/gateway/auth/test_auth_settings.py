"""Reading AuthSettings: every mistake is refused at load and names its full key path."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from common.settings import SettingsError, read
from gateway.auth.keys import KeyLoadError, load_static_keys
from gateway.auth.settings import AuthSettings
from gateway.auth.verifier import JwtVerifier, TokenRejected
from tests.gateway.auth.authkit import AUDIENCE, ISSUER, Signer

BASE: dict[str, Any] = {
    "issuer": ISSUER,
    "audience": AUDIENCE,
    "algorithms": ["RS256"],
    "pem_files": ["/etc/idp.pem"],
}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"surprise": 1}, r"gw\.auth: unknown key\(s\) surprise"),
        ({"issuer": 5}, r"gw\.auth\.issuer: expected a non-empty string"),
        ({"algorithms": "RS256"}, r"gw\.auth\.algorithms: expected a list of strings"),
        ({"algorithms": []}, r"gw\.auth\.algorithms: list at least one"),
        ({"algorithms": ["none"]}, r"gw\.auth\.algorithms: unsupported \['none'\]"),
        ({"algorithms": ["RS256", "HS256"]}, r"gw\.auth\.algorithms: HS\* and asymmetric"),
        ({"algorithms": ["HS256"]}, r"gw\.auth\.algorithms: HS\* algorithms take keys from"),
        ({"hmac_secret_file": "/s"}, r"gw\.auth\.hmac_secret_file: set only when"),
        ({"pem_files": []}, r"gw\.auth\.pem_files: no key source"),
        ({"leeway_s": "30"}, r"gw\.auth\.leeway_s: expected float"),
        ({"leeway_s": -1}, r"gw\.auth\.leeway_s: must be 0 or greater"),
        ({"max_token_bytes": 10**6}, r"gw\.auth\.max_token_bytes: must be between"),
        ({"production": "yes"}, r"gw\.auth\.production: expected bool"),
        ({"claims": {"dept": "x"}}, r"gw\.auth\.claims: unknown key\(s\) dept"),
        ({"claims": ["x"]}, r"gw\.auth\.claims: expected a mapping"),
        ({"jwks": {"url": 5}}, r"gw\.auth\.jwks\.url: expected a non-empty string"),
        ({"jwks": {}}, r"gw\.auth\.jwks\.url: expected a string"),
        ({"jwks": {"url": "http://idp.example/jwks"}}, r"gw\.auth\.jwks\.url: plain http"),
        ({"jwks": {"url": "https://u:p@idp.example/jwks"}}, r"gw\.auth\.jwks\.url: must not"),
        ({"jwks": {"url": "ftp://idp.example/jwks"}}, r"gw\.auth\.jwks\.url: expected an https"),
        (
            {"jwks": {"url": "https://idp.example", "refresh_interval_s": 0}},
            r"gw\.auth\.jwks\.refresh_interval_s: must be greater than 0",
        ),
        (
            {"mtls": {"server_cert_file": "c", "server_key_file": "k"}},
            r"gw\.auth\.mtls\.client_ca_file: expected a string",
        ),
        (
            {
                "mtls": {
                    "server_cert_file": "c",
                    "server_key_file": "k",
                    "client_ca_file": "a",
                    "require_client_cert": 1,
                }
            },
            r"gw\.auth\.mtls\.require_client_cert: expected bool",
        ),
    ],
)
def test_invalid_settings_are_refused_with_the_key_path(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        read(AuthSettings, {**BASE, **overrides}, "gw.auth")


def test_egress_urls_name_the_jwks_url() -> None:
    url = "https://idp.region.example/realms/staff/protocol/openid-connect/certs"
    settings = read(AuthSettings, {**BASE, "jwks": {"url": url}}, "auth")
    assert settings.egress_urls() == (url,)
    assert read(AuthSettings, BASE, "auth").egress_urls() == ()


def test_plain_http_needs_an_explicit_opt_in() -> None:
    jwks = {"url": "http://idp.internal/jwks", "allow_plain_http": True}
    assert read(AuthSettings, {**BASE, "jwks": jwks}, "auth").jwks is not None


def test_pem_file_with_a_private_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyLoadError, match="holds a private key"):
        load_static_keys(read(AuthSettings, {**BASE, "pem_files": [str(path)]}, "auth"))


def test_key_of_the_wrong_family_is_refused(tmp_path: Path, ec_signer: Signer) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(ec_signer.public_pem)
    with pytest.raises(KeyLoadError, match="no key usable with the pinned algorithms"):
        load_static_keys(read(AuthSettings, {**BASE, "pem_files": [str(path)]}, "auth"))


def test_custom_claim_names_map_to_the_principal(tmp_path: Path, rsa_signer: Signer) -> None:
    path = tmp_path / "idp.pem"
    path.write_bytes(rsa_signer.public_pem)
    settings = read(
        AuthSettings,
        {
            **BASE,
            "pem_files": [str(path)],
            "claims": {
                "department": "https://region.example/dept",
                "roles": "realm_access.roles",
                "clearance": "level",
                "purpose": "legal_basis",
            },
        },
        "auth",
    )
    verifier = JwtVerifier(settings, load_static_keys(settings))
    claims: dict[str, Any] = {
        "https://region.example/dept": "cardiology",
        "realm_access": {"roles": ["nurse"]},
        "level": 2,
        "legal_basis": "GDPR 9(2)(h)",
        "jti": "t-1",
    }
    token = rsa_signer.token(department=None, roles=None, **claims)
    principal = verifier.verify(token)
    assert (principal.department, principal.roles, principal.clearance, principal.purpose) == (
        "cardiology",
        frozenset({"nurse"}),
        "2",
        "GDPR 9(2)(h)",
    )
    assert principal.token_id == "t-1" and principal.issuer == ISSUER
    assert principal.expires_at > time.time()
    dept_claim: dict[str, Any] = {"https://region.example/dept": "x"}
    with pytest.raises(TokenRejected, match=r"'realm_access\.roles' must be a list"):
        verifier.verify(rsa_signer.token(realm_access={"roles": 5}, department=None, **dept_claim))
