"""TLS for the connections the gateway opens: to workers and to the audit store.

Off-loopback traffic is encrypted unless the operator explicitly allows plaintext (the residency
guard refuses it otherwise). With a client certificate this is mutual TLS: workers, whose API has
no caller authentication of its own, then accept only the gateways.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from common.settings import Invalid, SettingsError, setting


@dataclass(frozen=True, slots=True)
class ClientTls:
    """Whom to trust (`ca_file`), who we are (`cert_file` + `key_file`, optional) and, when the
    certificate names the server differently from the address we dial, `server_name`."""

    ca_file: str = setting(
        doc="the CA that signed the servers (PEM)",
        expect="a string (the CA that signed the servers)",
    )
    cert_file: str | None = setting(None, doc="client certificate for mutual TLS (PEM)")
    key_file: str | None = setting(None, doc="the private key of cert_file (PEM)")
    server_name: str | None = setting(
        None, doc="the name the servers' certificates carry, when not the dialled host"
    )

    def check(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise Invalid("", "set both cert_file and key_file, or neither")

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials read from the files now (a missing file names its key)."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "ca_file"),
            private_key=_read(self.key_file, "key_file") if self.key_file else None,
            certificate_chain=_read(self.cert_file, "cert_file") if self.cert_file else None,
        )

    def channel_options(self) -> list[tuple[str, str]]:
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"tls.{key}: cannot read {path}: {exc.strerror}") from exc


def secure_or_insecure_channel(
    target: str, tls: ClientTls | None, options: Sequence[tuple[str, object]]
) -> grpc.aio.Channel:
    """An aio channel to `target`, over TLS when `tls` is given."""
    if tls is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    return grpc.aio.secure_channel(
        target, tls.credentials(), options=[*options, *tls.channel_options()]
    )
