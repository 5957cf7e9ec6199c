"""Where the bearer token comes from: a string, a file re-read when it changes, or a callable."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class TokenProvider(Protocol):
    """Returns the bearer token to send; called before every attempt of every call."""

    def token(self) -> str: ...


class StaticToken:
    """The same token for every call."""

    def __init__(self, token: str) -> None:
        self._token = token.strip()

    def token(self) -> str:
        return self._token


class TokenFile:
    """A token kept in a file (a mounted secret, a sidecar's output), re-read when it changes.

    The file is stat'ed on every call and read again only when its modification time, size or
    inode changed, so a rotated token is used from the next call on without a restart.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._token = ""

    def token(self) -> str:
        stat = self._path.stat()
        seen = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with self._lock:
            if seen != self._seen:
                self._token = self._path.read_text().strip()
                self._seen = seen
            return self._token


class CallableToken:
    """A token from a function (for example an OAuth client that refreshes on its own)."""

    def __init__(self, get: Callable[[], str]) -> None:
        self._get = get

    def token(self) -> str:
        return self._get().strip()


TokenSource = str | TokenProvider | Callable[[], str] | None


def as_provider(source: TokenSource) -> TokenProvider | None:
    """A provider for what the caller passed as `token=`: a string, a provider or a callable."""
    if source is None or isinstance(source, TokenProvider):
        return source
    if isinstance(source, str):
        return StaticToken(source)
    return CallableToken(source)
