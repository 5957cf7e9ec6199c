"""The record's OTLP encoding and the keyed pseudonyms."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from audit.otlp import SCOPE_NAME, audit_spans, export_request, record_to_span, span_to_record
from audit.pseudonym import KeyFileError, Pseudonymizer, content_hmac, load_or_create_key
from audit.record import Outcome
from tests.audit.conftest import MakeRecord


def test_span_round_trip_keeps_every_field(make_record: MakeRecord) -> None:
    record = make_record(prompt_text="hello", answer_text=None, outcome=Outcome.DENIED)
    assert span_to_record(record_to_span(record)) == record


def test_span_uses_genai_attribute_names_and_omits_uncaptured_content(
    make_record: MakeRecord,
) -> None:
    record = make_record(model="m-1", prompt_tokens=7, completion_tokens=9)
    attrs = {kv.key: kv.value for kv in record_to_span(record).attributes}
    assert attrs["gen_ai.operation.name"].string_value == "chat"
    assert attrs["gen_ai.request.model"].string_value == "m-1"
    assert attrs["gen_ai.usage.input_tokens"].int_value == 7
    assert attrs["gen_ai.usage.output_tokens"].int_value == 9
    assert "llmgateway.audit.prompt_text" not in attrs


def test_export_request_separates_audit_scope_from_other_spans(make_record: MakeRecord) -> None:
    request = export_request([make_record(), make_record()], "gw")
    other = request.resource_spans.add()
    other.scope_spans.add().spans.add(name="unrelated")
    ours, foreign = audit_spans(request)
    assert request.resource_spans[0].scope_spans[0].scope.name == SCOPE_NAME
    assert len(ours) == 2
    assert foreign == 1


def test_pseudonym_is_keyed_and_stable() -> None:
    a, b = Pseudonymizer(b"k" * 32), Pseudonymizer(b"j" * 32)
    assert a("alice") == a("alice")
    assert a("alice") != a("bob")
    assert a("alice") != b("alice")
    assert content_hmac(b"k" * 32, "text") != content_hmac(b"j" * 32, "text")


def test_key_file_generated_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "pseudonym.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == key


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    load_or_create_key(path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_key(path)
