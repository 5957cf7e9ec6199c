"""The answer as the gateway keeps it: hashed part by part, text kept only when needed."""

from __future__ import annotations

from audit.pseudonym import content_hasher, content_hmac
from gateway.request.domain import Answer

KEY = b"k" * 32
PARTS = ["Patient ", "stable; ", "", "review ", "at 14:00 — ", "ok"]


def test_a_stream_that_needs_only_the_hash_keeps_no_text() -> None:
    answer = Answer(keep_text=False, hasher=content_hasher(KEY))
    for part in PARTS:
        answer.add(part)
    assert answer.parts == [] and answer.text == ""
    assert answer.produced
    assert answer.hasher is not None
    assert answer.hasher.hexdigest() == content_hmac(KEY, "".join(PARTS))


def test_kept_text_is_the_whole_answer() -> None:
    answer = Answer(keep_text=True, hasher=content_hasher(KEY))
    for part in PARTS:
        answer.add(part)
    assert answer.text == "".join(PARTS)


def test_only_empty_parts_is_no_answer() -> None:
    answer = Answer()
    answer.add("")
    assert not answer.produced
