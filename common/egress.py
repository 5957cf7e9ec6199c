"""Residency guard: every egress address must resolve inside the allowed networks and names."""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from prometheus_client import Counter

from common.settings import SettingsError, setting

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], Sequence[str]]

RESIDENCY_REFUSALS = Counter(
    "llmgw_residency_refusals_total",
    "Egress addresses refused by the residency guard, by what they were for.",
    ["what"],
)

# Loopback never leaves the machine, so it is always allowed and may always be plaintext.
_LOOPBACK: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
_TLS_SCHEMES = frozenset({"https", "rediss", "grpcs"})
_PLAINTEXT_SCHEMES = frozenset({"http", "redis", "grpc"})
# Schemes whose TLS use is not visible in the URL (libpq's sslmode may come from elsewhere):
# the caller says whether it connects with TLS.
_CALLER_TLS_SCHEMES = frozenset({"postgresql", "postgres"})
_LOCAL_GRPC_SCHEMES = ("unix:", "unix-abstract:")


class ResidencyViolation(Exception):
    """An egress address is not allowed; the message names the address, its use and the rule.

    The message never contains credentials: URLs are reduced to host and port before they are
    named.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _strings(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{key}: expected a list of strings, got {value!r}")
    return value


def _networks(value: object, key: str) -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for i, item in enumerate(_strings(value, key)):
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as err:
            raise SettingsError(
                f"{key}[{i}]: expected a CIDR such as 10.20.0.0/16 ({err})"
            ) from None
    return tuple(networks)


def _suffixes(value: object, key: str) -> tuple[str, ...]:
    suffixes = []
    for i, item in enumerate(_strings(value, key)):
        suffix = item.strip().lower().lstrip(".")
        if not suffix:
            raise SettingsError(f"{key}[{i}]: expected a DNS suffix")
        suffixes.append(suffix)
    return tuple(suffixes)


def _plaintext(value: object, key: str) -> bool | tuple[str, ...]:
    if isinstance(value, bool):
        return value
    if not isinstance(value, list):
        raise SettingsError(f"{key}: expected true, false or a list of host patterns and CIDRs")
    return tuple(_strings(value, key))


@dataclass(frozen=True, slots=True)
class ResidencySettings:
    """Where the gateway may send data (loopback is always allowed)."""

    allowed_networks: tuple[IPNetwork, ...] = setting(
        (),
        doc="CIDRs every resolved egress address must fall in",
        expect="a list of CIDRs",
        parse=_networks,
    )
    allowed_host_suffixes: tuple[str, ...] = setting(
        (),
        doc="when not empty, the DNS suffixes a host name must end with (IP literals are "
        "judged by network only)",
        parse=_suffixes,
    )
    allow_plaintext: bool | tuple[str, ...] = setting(
        (),
        doc="true: plaintext to any allowed address; or host patterns (fnmatch globs such as "
        "*.cluster.local) and CIDRs reachable without TLS; by default only loopback",
        expect="true, false or a list of host patterns and CIDRs",
        parse=_plaintext,
    )


@dataclass(frozen=True, slots=True)
class _Target:
    host: str  # a host name or an IP literal, without brackets
    port: int | None
    tls: bool

    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def resolve_system(host: str) -> list[str]:
    """Resolve with the system resolver (getaddrinfo), every address family, deduplicated."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class EgressGuard:
    """Checks egress addresses against `ResidencySettings` before anything connects to them.

    `check` resolves host names and checks every resolved address, so a name under an allowed
    suffix that resolves outside the allowed networks is refused, as is a name that does not
    resolve. It blocks on DNS: on a running event loop use `check_async`.
    """

    def __init__(self, settings: ResidencySettings, *, resolver: Resolver = resolve_system) -> None:
        self._settings = settings
        self._resolve = resolver

    async def check_async(self, url_or_target: str, *, what: str, tls: bool) -> None:
        """`check` in a worker thread, so that reload never blocks the event loop on DNS."""
        await asyncio.to_thread(self.check, url_or_target, what=what, tls=tls)

    def check(self, url_or_target: str, *, what: str, tls: bool) -> None:
        """Raise `ResidencyViolation` unless every address behind `url_or_target` is allowed.

        Accepts URLs (`https://host/path`, `redis://host:6379/0`, `rediss://...`,
        `postgresql://user@host:5432/db`) and gRPC targets (`host:port`, `dns:///host:port`,
        `ipv4:1.2.3.4:5,1.2.3.5:5`, `ipv6:[::1]:5`; `unix:` paths are always local). `tls` says
        whether the connection uses TLS where the form itself does not say (`http://` and
        `redis://` are always plaintext).
        """
        try:
            targets = _parse(url_or_target, tls)
        except ValueError as err:
            RESIDENCY_REFUSALS.labels(what=what).inc()
            raise ResidencyViolation(f"{what}: {err}") from None
        for target in targets:
            try:
                self._check_target(target, what)
            except ResidencyViolation:
                RESIDENCY_REFUSALS.labels(what=what).inc()
                raise

    def _check_target(self, target: _Target, what: str) -> None:
        literal = _ip_literal(target.host)
        addresses = [literal] if literal is not None else self._resolved(target, what)
        if all(_in(address, _LOOPBACK) for address in addresses):
            return
        settings = self._settings
        if literal is None and settings.allowed_host_suffixes:
            name = target.host.lower().rstrip(".")
            if not any(name == s or name.endswith("." + s) for s in settings.allowed_host_suffixes):
                raise ResidencyViolation(
                    f"{what} {target.label()} refused: host name is not under an allowed suffix "
                    f"(residency.allowed_host_suffixes = {list(settings.allowed_host_suffixes)}); "
                    "use an address inside the country's infrastructure or add its suffix"
                )
        for address in addresses:
            if not _in(address, (*_LOOPBACK, *settings.allowed_networks)):
                resolved = "" if literal is not None else f" resolves to {address}, which"
                raise ResidencyViolation(
                    f"{what} {target.label()} refused:{resolved} is outside the allowed networks "
                    f"(residency.allowed_networks = {[str(n) for n in settings.allowed_networks]} "
                    "plus loopback); point it at an allowed address or extend the allowlist"
                )
        if not target.tls and not self._plaintext_allowed(target, addresses):
            raise ResidencyViolation(
                f"{what} {target.label()} refused: plaintext (no TLS) to an address off loopback "
                "is not allowed (residency.allow_plaintext); use TLS (https://, rediss://, a TLS "
                "channel) or allow plaintext to this host explicitly"
            )

    def _resolved(self, target: _Target, what: str) -> list[IPAddress]:
        try:
            raw = self._resolve(target.host)
        except (OSError, UnicodeError) as err:
            raise ResidencyViolation(
                f"{what} {target.label()} refused: host name does not resolve ({err}); every "
                "egress address must resolve so that it can be checked against "
                "residency.allowed_networks"
            ) from None
        addresses = [_ip_literal(a) for a in raw]
        if not addresses or any(a is None for a in addresses):
            raise ResidencyViolation(
                f"{what} {target.label()} refused: host name resolved to no usable IP address "
                f"({list(raw)}); check its DNS records"
            )
        return [a for a in addresses if a is not None]

    def _plaintext_allowed(self, target: _Target, addresses: Sequence[IPAddress]) -> bool:
        rule = self._settings.allow_plaintext
        if isinstance(rule, bool):
            return rule
        host = target.host.lower()
        for pattern in rule:
            try:
                network = ipaddress.ip_network(pattern, strict=False)
            except ValueError:
                if fnmatch.fnmatchcase(host, pattern.lower()):
                    return True
                continue
            if all(_in(address, (network,)) for address in addresses):
                return True
        return False


def _in(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    # An IPv4-mapped IPv6 address (::ffff:10.0.0.1) reaches the IPv4 host: judge it as IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == n.version and address in n for n in networks)


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _parse(value: str, tls: bool) -> list[_Target]:
    text = value.strip()
    if not text:
        raise ValueError("empty address; configure a host name or IP address")
    if text.startswith(_LOCAL_GRPC_SCHEMES):
        return []
    if text.startswith("dns:"):
        rest = text[len("dns:") :]
        if rest.startswith("//"):
            authority, _, rest = rest[2:].partition("/")
            if authority:
                raise ValueError(
                    "a dns:// target with a DNS server authority is not supported; "
                    "use dns:///host:port and the system resolver"
                )
        return [_host_port(rest, tls)]
    if text.startswith(("ipv4:", "ipv6:")):
        return [_host_port(part, tls) for part in text[5:].split(",")]
    if "://" in text:
        return [_url(text, tls)]
    return [_host_port(text, tls)]


def _url(text: str, tls: bool) -> _Target:
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in _TLS_SCHEMES:
        tls = True
    elif scheme in _PLAINTEXT_SCHEMES:
        tls = False
    elif scheme not in _CALLER_TLS_SCHEMES:
        raise ValueError(
            f"unsupported URL scheme {scheme!r}; use https, http, rediss, redis or postgresql"
        )
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ValueError(f"{scheme} URL has an invalid port; expected host:port") from None
    if not host:
        raise ValueError(f"{scheme} URL has no host; expected {scheme}://host:port/...")
    return _Target(host, port, tls)


def _host_port(text: str, tls: bool) -> _Target:
    text = text.lstrip("/")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"unterminated IPv6 literal in {text!r}")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") > 1:
        host, port_text = text, ""  # a bare IPv6 literal
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError("target has no host; expected host:port")
    if not port_text:
        return _Target(host, None, tls)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"target {host} has an invalid port; expected host:port")
    return _Target(host, int(port_text), tls)
