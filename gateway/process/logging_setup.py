"""Structured logging: one line per event on one root handler; a filter drops content fields."""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from dataclasses import dataclass
from typing import IO, Literal

from common.settings import SettingsError, setting
from gateway.request import access_log

# Attributes every LogRecord has; everything else came from `extra=` and is what we filter.
# (`exc_text` would match the content pattern, so the standard names are never filtered.)
_STANDARD_ATTRIBUTES = frozenset(
    {*vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)), "message", "asctime"}
)
# Names that, in this codebase, would carry prompt or answer text. Deliberately broad: a false
# positive costs a field in a log line, a miss puts a patient's words in the log store.
CONTENT_FIELD = re.compile(r"prompt|text|content|completion|answer|messages", re.IGNORECASE)
# ...except names that clearly hold a number or a digest about the content (prompt_tokens,
# answer_sha256), which the audit trail and the operators need.
SAFE_SUFFIX = re.compile(r"_(tokens|count|chars|length|len|bytes|hash|sha256|hmac)$", re.IGNORECASE)
DROPPED_FIELDS_KEY = "dropped_fields"
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _level(value: object, key: str) -> str:
    if not isinstance(value, str) or value.upper() not in _LEVELS:
        raise SettingsError(f"{key}: expected one of {list(_LEVELS)}")
    return value.upper()


def _lines_per_second(value: float, key: str) -> None:
    if not value > 0:
        raise SettingsError(f"{key}: expected lines per second above 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """Log level, `json` (one object per line) or `text`, and whether content fields may pass."""

    level: str = setting(
        "INFO", doc="DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)", parse=_level
    )
    format: Literal["json", "text"] = setting(
        "json", doc="json: one object per line; text: human-readable", expect="'json' or 'text'"
    )
    capture_content: bool = setting(
        False,
        doc="let prompt/answer fields through the log filter: a developer's machine only, "
        "never a deployment holding real prompts",
    )
    access_log: bool = setting(True, doc="one line per request (logger llmgateway.access)")
    access_log_rate: float = setting(
        200.0,
        doc="at most this many access log lines per second on average",
        expect="lines per second above 0",
        check=_lines_per_second,
    )


class ContentFieldFilter(logging.Filter):
    """Defence in depth: removes `extra=` fields named like prompt/text/content from records.

    Code must not log content in the first place; this catches the `extra={"prompt": ...}` slip.
    It cannot see text formatted into the message itself. The removed names are listed under
    `dropped_fields` so that the slip shows up in the logs and can be fixed. The record is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        dropped = [
            key
            for key in vars(record)
            if key not in _STANDARD_ATTRIBUTES
            and CONTENT_FIELD.search(key)
            and not SAFE_SUFFIX.search(key)
        ]
        for key in dropped:
            delattr(record, key)
        if dropped:
            setattr(record, DROPPED_FIELDS_KEY, sorted(dropped))
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)s [%(processName)s %(process)d] %(name)s: %(message)s"


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, process (name and pid), message,
    extra fields, exception. With several gateway processes the name is `gw-<index>`."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        entry: dict[str, object] = {
            "time": created.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class _GatewayHandler(logging.StreamHandler[IO[str]]):
    """The handler `configure_logging` installs; a type of its own so a reload can replace it."""


def configure_logging(
    settings: LoggingSettings, *, stream: IO[str] | None = None
) -> logging.Handler:
    """Make the root logger's one output handler this one, and return it.

    The handler installed earlier by this function, or by `logging.basicConfig` (a plain
    StreamHandler), is replaced: two handlers on the root would print every event twice.
    Handlers of other types (a test's capture handler) are left alone.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if type(h) in (_GatewayHandler, logging.StreamHandler)]:
        root.removeHandler(old)
        old.close()
    handler = _GatewayHandler(stream if stream is not None else sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonLinesFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    if not settings.capture_content:
        # On the handler, not a logger: logger filters do not see records from child loggers.
        handler.addFilter(ContentFieldFilter())
    root.addHandler(handler)
    root.setLevel(settings.level)
    access_log.configure(enabled=settings.access_log, rate_per_s=settings.access_log_rate)
    return handler
