"""Structured logging: JSON lines, and content fields dropped unless explicitly enabled."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterator

import pytest

from common.settings import read
from gateway.process.logging_setup import LoggingSettings, configure_logging

MARKER = "MARKER-5f1c patient text"
Configure = Callable[[LoggingSettings], io.StringIO]


@pytest.fixture
def configure() -> Iterator[Configure]:
    root = logging.getLogger()
    level = root.level
    installed: list[logging.Handler] = []

    def install(settings: LoggingSettings) -> io.StringIO:
        stream = io.StringIO()
        installed.append(configure_logging(settings, stream=stream))
        return stream

    yield install
    for handler in installed:
        root.removeHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_content_fields_are_dropped_and_named(configure: Configure) -> None:
    stream = configure(LoggingSettings())
    logging.getLogger("gateway.request.pipeline").info(
        "request done",
        extra={
            "prompt": MARKER,
            "answer_text": MARKER,
            "Content": MARKER,
            "input_messages": [MARKER],
            "department": "radiology",
            "prompt_tokens": 12,
            "answer_sha256": "ab" * 32,
        },
    )
    assert MARKER not in stream.getvalue()
    (entry,) = lines(stream)
    assert entry["message"] == "request done"
    assert entry["logger"] == "gateway.request.pipeline"
    assert entry["level"] == "INFO"
    assert entry["department"] == "radiology"
    assert entry["prompt_tokens"] == 12  # counts and digests about content are kept
    assert entry["answer_sha256"] == "ab" * 32
    assert entry["dropped_fields"] == ["Content", "answer_text", "input_messages", "prompt"]


def test_capture_content_lets_fields_through(configure: Configure) -> None:
    stream = configure(LoggingSettings(capture_content=True))
    logging.getLogger("gateway.process.dev").warning("debugging", extra={"prompt": MARKER})
    (entry,) = lines(stream)
    assert entry["prompt"] == MARKER
    assert "dropped_fields" not in entry


def test_exceptions_are_kept_and_reconfiguring_replaces_the_handler(configure: Configure) -> None:
    first = configure(LoggingSettings())
    second = configure(LoggingSettings(level="WARNING"))
    log = logging.getLogger("gateway.x")
    log.info("below the level")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    assert first.getvalue() == ""
    (entry,) = lines(second)
    assert entry["level"] == "ERROR"
    assert isinstance(entry["exception"], str) and "RuntimeError: boom" in entry["exception"]
    assert str(entry["time"]).endswith("+00:00")


def test_text_format(configure: Configure) -> None:
    stream = configure(LoggingSettings(format="text"))
    logging.getLogger("gateway.y").error("plain %s", "line", extra={"text": MARKER})
    output = stream.getvalue()
    assert f"ERROR [MainProcess {os.getpid()}] gateway.y: plain line" in output
    assert MARKER not in output


def test_one_line_per_event_after_basic_config(configure: Configure) -> None:
    """`logging.basicConfig` (as the CLI calls) plus the configured handler: still one line."""
    root = logging.getLogger()
    before = list(root.handlers)
    basic = logging.StreamHandler(io.StringIO())
    root.addHandler(basic)  # what basicConfig installs
    try:
        stream = configure(LoggingSettings())
        logging.getLogger("gateway.z").warning("once")
        assert basic not in root.handlers
        assert [h for h in before if h not in root.handlers] == []  # others left alone
        (entry,) = lines(stream)
        assert entry["message"] == "once"
        assert entry["process"] == "MainProcess" and entry["pid"] == os.getpid()
    finally:
        if basic in root.handlers:
            root.removeHandler(basic)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"lvl": "INFO"}, r"logging: unknown key\(s\) lvl"),
        ({"level": "LOUD"}, "logging.level: expected one of"),
        ({"format": "xml"}, "logging.format: expected 'json' or 'text'"),
        ({"capture_content": "no"}, "logging.capture_content: expected bool"),
    ],
)
def test_settings_errors_name_the_key(data: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        read(LoggingSettings, data, "logging")


def test_settings_parse() -> None:
    assert read(
        LoggingSettings, {"level": "debug", "format": "text"}, "logging"
    ) == LoggingSettings("DEBUG", "text", False)
