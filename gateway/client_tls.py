"""TLS for the connections the gateway opens: to workers and to the audit store.

Off-loopback traffic is encrypted unless the operator explicitly allows plaintext (the residency
guard refuses it otherwise). With a client certificate this is mutual TLS: workers, whose API has
no caller authentication of its own, then accept only the gateways.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import grpc

from common.settings import SettingsError, optional_str, section


@dataclass(frozen=True, slots=True)
class ClientTls:
    """Whom to trust (`ca_file`), who we are (`cert_file` + `key_file`, optional) and, when the
    certificate names the server differently from the address we dial, `server_name`."""

    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object] | object, path: str) -> Self:
        d = section(data, path, ("ca_file", "cert_file", "key_file", "server_name"))
        ca_file = optional_str(d, "ca_file", path)
        if ca_file is None:
            raise SettingsError(f"{path}.ca_file: required (the CA that signed the servers)")
        tls = cls(
            ca_file=ca_file,
            cert_file=optional_str(d, "cert_file", path),
            key_file=optional_str(d, "key_file", path),
            server_name=optional_str(d, "server_name", path),
        )
        if (tls.cert_file is None) != (tls.key_file is None):
            raise SettingsError(f"{path}: set both cert_file and key_file, or neither")
        return tls

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
