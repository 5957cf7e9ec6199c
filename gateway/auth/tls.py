"""Server credentials for TLS with client certificates (mTLS) on the gateway's port."""

from __future__ import annotations

from pathlib import Path

import grpc

from common.settings import SettingsError
from gateway.auth.settings import AuthSettings


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise SettingsError(f"auth.mtls.{key}: cannot read {path} ({err.strerror})") from None


def server_credentials(settings: AuthSettings) -> grpc.ServerCredentials | None:
    """mTLS credentials for `server.add_secure_port`, or None when mTLS is not configured.

    With `require_client_cert` the TLS handshake itself refuses clients without a certificate
    signed by the client CA; without it such clients connect and only the token identifies them.
    """
    mtls = settings.mtls
    if mtls is None:
        return None
    return grpc.ssl_server_credentials(
        [
            (
                _read(mtls.server_key_file, "server_key_file"),
                _read(mtls.server_cert_file, "server_cert_file"),
            )
        ],
        root_certificates=_read(mtls.client_ca_file, "client_ca_file"),
        require_client_auth=mtls.require_client_cert,
    )
